# Runs examples/worker/worker.js in workerd (https://github.com/cloudflare/workerd), the open-source runtime
# behind Cloudflare Workers:
#
#   npx workerd serve examples/worker/workerd.capnp                                   # 127.0.0.1:8787
#   npx workerd serve examples/worker/workerd.capnp --socket-addr http=127.0.0.1:9000  # another address
#
# then point the bridge at it:  wsbridge tcp2ws ... --backend ws://127.0.0.1:8787/

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "pop3", worker = .pop3Worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "pop3") ],
);

const pop3Worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "2025-01-01",
  bindings = [
    # The one account. On Cloudflare: [vars] POP3_USER in wrangler.toml, `wrangler secret put POP3_PASS`.
    (name = "POP3_USER", text = "alice"),
    (name = "POP3_PASS", text = "secret"),
    # "true" allows USER/PASS before STLS on a connection that is not under TLS (local tests only).
    (name = "ALLOW_PLAINTEXT_AUTH", text = "false"),
  ],
);
