//! [`Server`]'s own contract, driven by hand on an executor: `run` once, `stop` before `run`, and what
//! `bind` refuses. What every runtime must do (relay, timers, limits, deliveries, flooding, `stop`'s
//! drain, …) is in `tests/tests/runtime_contract.rs`, on the fake sessions of `wsbridge_core::testing`.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use wsbridge_core::testing::{Plan, Target, TestFactory};

use crate::{ListenerSpec, RuntimeOptions, Server};

#[test]
fn run_is_once_and_a_server_stopped_before_it_runs_returns_at_once() {
    let plan = Plan::new(Target::None);
    let factory = Arc::new(TestFactory { plan, busy: None });
    let spec = || ListenerSpec::new("127.0.0.1:0".parse().unwrap(), factory.clone());
    let server = Server::bind(vec![spec(), spec()], RuntimeOptions::default()).unwrap();
    assert_eq!(server.local_addrs().len(), 2);
    let ex = smol::Executor::new();
    smol::block_on(ex.run(async {
        let again = async {
            smol::future::yield_now().await;
            let second = server.run(&ex).await;
            server.stop(Duration::ZERO).await;
            second
        };
        let (first, second) = smol::future::zip(server.run(&ex), again).await;
        assert!(first.is_ok(), "{first:?}");
        assert!(second.is_err(), "a second run must fail");
    }));

    let server = Server::bind(vec![spec()], RuntimeOptions::default()).unwrap();
    let addr = server.local_addrs()[0];
    smol::block_on(async {
        assert_eq!(server.stop(Duration::from_secs(5)).await, 0);
        assert!(server.run(&ex).await.is_ok());
    });
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");

    let empty = Server::bind(Vec::new(), RuntimeOptions::default());
    assert!(empty.is_err());
    let zero = Server::bind(vec![spec()], RuntimeOptions { max_connections: 0 });
    assert!(zero.is_err());
}

/// What an idle connection costs the executor is its task's allocation, and that is a
/// [`SessionTask`](crate::session_task::SessionTask) and its place in the count: no `async` state
/// around it (it is a hand-written future), and the resolve, the connect and deliveries are boxed
/// apart while they last (issue #10). 192 bytes on 64-bit targets when this was written.
#[cfg(target_pointer_width = "64")]
#[test]
fn an_idle_session_task_is_small() {
    use crate::session_task::SessionTask;
    let size = std::mem::size_of::<SessionTask>();
    assert!(size <= 200, "SessionTask is {size} bytes");
}
