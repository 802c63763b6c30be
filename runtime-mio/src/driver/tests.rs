//! The event loop's internals, driven by hand with the fake sessions of `wsbridge_core::testing`: the
//! read budget and the revisit list, and resolver answers for a reused slot. What every runtime must do
//! (relay, timers, limits, deliveries, …) is in `tests/tests/runtime_contract.rs`, run on both runtimes.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use wsbridge_core::session::Session;
use wsbridge_core::testing::{Plan, Sink, Target, TestFactory};

use super::event_loop::{Accepted, EventLoop, ListenerInfo, LoopHandle};
use super::resolver::Job;

const WAIT: Duration = Duration::from_secs(10);

/// An event loop (not running: the test turns it) with one listener whose sessions follow `plan`, and
/// the queue of the resolver jobs it sends.
fn lone_loop(plan: &Plan) -> (EventLoop, LoopHandle, mpsc::Receiver<Job>) {
    let infos: Arc<[ListenerInfo]> = vec![ListenerInfo {
        factory: Arc::new(TestFactory {
            plan: plan.clone(),
            busy: None,
        }),
        addr: "127.0.0.1:0".parse().unwrap(),
        per_ip: None,
        rate: None,
    }]
    .into();
    let (jobs, job_rx) = mpsc::channel();
    let (lp, handle) = EventLoop::new(
        0,
        Arc::default(),
        infos,
        Arc::new(AtomicUsize::new(1)),
        jobs,
        crate::metrics::Metrics::new(vec![("test", "127.0.0.1:0".into())], 1),
    )
    .unwrap();
    (lp, handle, job_rx)
}

/// Hands the loop a connected socket with `session` (`None`: one from the listener's factory), after
/// `before` ran on the client's end; returns the client's end.
fn adopt(
    lp: &mut EventLoop,
    session: Option<Box<dyn Session + Send>>,
    before: impl FnOnce(&mut TcpStream),
) -> TcpStream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (accepted, peer) = l.accept().unwrap();
    before(&mut client);
    accepted.set_nonblocking(true).unwrap();
    lp.adopt(Accepted {
        stream: mio::net::TcpStream::from_std(accepted),
        peer,
        listener: 0,
        conn: 1,
        accepted_at: Instant::now(),
        session,
        ip_slot: None,
    })
    .expect("adopted");
    client
}

#[test]
fn read_budget_bounds_a_turn_and_the_revisit_list_finishes_the_job() {
    const BUDGET: usize = 8 * 1024;
    const TOTAL: usize = 6 * BUDGET;
    let (mut lp, _handle, _jobs) = lone_loop(&Plan::new(Target::None));
    lp.read_budget = BUDGET;
    let got = Arc::new(AtomicUsize::new(0));
    // All of it sits in the kernel before the loop sees the socket: one edge, no more.
    let _client = adopt(&mut lp, Some(Box::new(Sink(got.clone()))), |c| {
        c.write_all(&[7u8; TOTAL]).unwrap();
    });

    let mut per_turn = Vec::new();
    for _ in 0..TOTAL / BUDGET {
        let before = got.load(Ordering::SeqCst);
        let t = Instant::now();
        lp.turn(Some(WAIT)).unwrap();
        per_turn.push(got.load(Ordering::SeqCst) - before);
        assert!(
            t.elapsed() < WAIT / 2,
            "a turn waited although work was due"
        );
        assert!(lp.revisit_pending(), "budget hit but nothing to revisit");
    }
    assert_eq!(per_turn, vec![BUDGET; TOTAL / BUDGET]);
    // The revisit finds the socket empty: nothing due any more.
    lp.turn(Some(Duration::from_millis(50))).unwrap();
    assert!(!lp.revisit_pending());
    assert_eq!(got.load(Ordering::SeqCst), TOTAL);
    assert_eq!(lp.len(), 1);
}

#[test]
fn a_resolver_answer_for_an_earlier_session_in_the_slot_is_dropped() {
    let plan = Plan::new(Target::Resolve("resolver.test", 9));
    let (mut lp, handle, job_rx) = lone_loop(&plan);
    let _client = adopt(&mut lp, None, |_| {});
    let job = job_rx.try_recv().expect("the resolve went to the pool");
    assert_eq!((job.host.as_str(), job.port), ("resolver.test", 9));

    let mut stale = job.key;
    stale.gen += 1;
    for key in [stale, job.key] {
        let msg = super::event_loop::Msg::Resolved {
            key,
            id: job.id,
            result: Err("nope".into()),
        };
        assert!(handle.send(msg).is_ok());
        lp.turn(Some(Duration::from_millis(50))).unwrap();
    }
    // Only the answer with the right generation reached the session.
    assert_eq!(plan.notes().len(), 1);
}
