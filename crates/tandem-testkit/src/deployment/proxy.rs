//! A TCP proxy for one directed replication link of a deployment of
//! separate nodes, like `tandem up`'s but without latency: a cut closes its
//! open connections and refuses new ones until it is healed.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the proxy waits to connect upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct LinkProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    cut: AtomicBool,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Both sockets of every open connection, so that a cut can close them.
    open: Mutex<BTreeMap<u64, (TcpStream, TcpStream)>>,
}

impl LinkProxy {
    pub fn start(upstream: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if s.cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&s.upstream, CONNECT_TIMEOUT) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                relay(&s, client, server);
            }
        });
        LinkProxy { addr, shared, accept: Some(accept) }
    }

    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let open = std::mem::take(&mut *self.shared.open.lock().expect("open"));
        for (a, b) in open.values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

fn relay(shared: &Arc<Shared>, client: TcpStream, server: TcpStream) {
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            server.try_clone().ok()?,
            client.try_clone().ok()?,
            server.try_clone().ok()?,
        ))
    })();
    let Some((c_reg, s_reg, c_out, s_in)) = clones else { return };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    shared.open.lock().expect("open").insert(id, (c_reg, s_reg));
    // A cut that raced with this accept has already drained the map.
    if shared.cut.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
    for (from, to) in [(client, server), (s_in, c_out)] {
        let shared = shared.clone();
        std::thread::spawn(move || pump(&shared, id, from, to));
    }
}

/// Copy one direction; when either side ends, close the whole connection.
fn pump(shared: &Shared, id: u64, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.open.lock().expect("open").remove(&id);
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
