//! The agent's HTTP endpoint: hyper (HTTP/1.1) on a one-thread tokio runtime,
//! bounded so that no client can stall or exhaust it.
//!
//! | limit | value | what it stops |
//! | --- | --- | --- |
//! | request head read within | [`HEADER_TIMEOUT`] | idle connections, a header that never ends |
//! | request head size | [`HEADER_BYTES`] | unbounded memory for one request |
//! | one connection's whole life | [`CONNECTION_LIFE`] | a client that pipelines and never reads |
//! | connections at once | [`CONNECTIONS`] (the oldest closed to make room) | descriptor exhaustion, a flood from many addresses |
//! | connections at once from one address | [`PER_PEER`] | one client crowding the others out |
//!
//! With `[web.tls]` each connection's TLS handshake must end within
//! [`HEADER_TIMEOUT`] too; with `[web.basic_auth_users]` every request is
//! checked (401 and nothing else without valid credentials) before it is
//! answered.
//!
//! Each connection is its own task, so a slow one holds up nobody else; the
//! answer itself is built on the blocking pool (it reads the maps under the
//! agent's lock). An `accept` that fails (EMFILE, ENFILE, ECONNABORTED) is
//! logged and retried after a pause, never fatal.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Notify, Semaphore};

/// Time a client has to send its request head (and, kept alive, the next one).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read (hyper's read buffer; 8 KiB is its minimum).
pub const HEADER_BYTES: usize = 16 * 1024;
/// A connection is closed this long after it was accepted, answered or not.
pub const CONNECTION_LIFE: Duration = Duration::from_secs(30);
/// Connections served at once; more are closed as soon as accepted.
pub const CONNECTIONS: usize = 256;
/// Connections served at once from one IP address.
pub const PER_PEER: usize = 16;

/// An answer: status, content type, body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// What answers a `GET`: (path, `Accept` header) to an answer. Runs on the
/// blocking pool.
pub type Handler = Arc<dyn Fn(&str, &str) -> Answer + Send + Sync>;

/// TLS and basic auth (`[web]`), both optional.
#[derive(Clone, Default)]
pub struct Security {
    /// Serve over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require one of these users.
    pub users: Option<super::web::Users>,
}

/// The running server; [`Http::stop`] ends it.
pub struct Http {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Http {
    /// Listens on `addr` (errors name the address) and serves on a thread.
    pub fn start(addr: SocketAddr, handler: Handler, security: Security) -> Result<Http, String> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr}: {e} (set `listen` or --listen)"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(8)
            .build()
            .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sonde-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => serve(l, handler, security, stopped).await,
                        Err(e) => log::error!("cannot serve HTTP: {e}"),
                    }
                });
                // Connections still open are dropped with the runtime.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
        Ok(Http {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops accepting, closes every connection, joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The connections open, oldest first, each with what closes it.
type Open = Arc<Mutex<VecDeque<(u64, Arc<Notify>)>>>;

/// One connection's places: the global one, its address's and its entry in
/// the list of open connections, given back on drop.
struct Slot {
    _global: tokio::sync::OwnedSemaphorePermit,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    open: Open,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(id, _)| *id != self.id);
    }
}

/// The places a new connection from `ip` needs: none past [`PER_PEER`] from
/// its address; past [`CONNECTIONS`], the oldest connection is closed to make
/// room (an idle flood ages out, a scraper that sends its request at once is
/// answered).
async fn take_slot(
    slots: &Arc<Semaphore>,
    peers: &Arc<Mutex<HashMap<IpAddr, usize>>>,
    open: &Open,
    ip: IpAddr,
    id: u64,
) -> Option<(Slot, Arc<Notify>)> {
    {
        let mut map = peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= PER_PEER {
            return None;
        }
        *n += 1;
    }
    let global = match Arc::clone(slots).try_acquire_owned() {
        Ok(g) => Some(g),
        Err(_) => {
            let oldest = open.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            if let Some((_, close)) = oldest {
                close.notify_one();
            }
            tokio::time::timeout(Duration::from_millis(200), Arc::clone(slots).acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        }
    };
    let Some(global) = global else {
        let mut map = peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
        }
        return None;
    };
    let close = Arc::new(Notify::new());
    open.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push_back((id, Arc::clone(&close)));
    let slot = Slot {
        _global: global,
        peers: Arc::clone(peers),
        ip,
        open: Arc::clone(open),
        id,
    };
    Some((slot, close))
}

async fn serve(
    listener: tokio::net::TcpListener,
    handler: Handler,
    security: Security,
    mut stopped: oneshot::Receiver<()>,
) {
    let acceptor = security.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    let peers = Arc::new(Mutex::new(HashMap::new()));
    let open: Open = Arc::default();
    let mut refused: u64 = 0;
    let mut next_id: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("HTTP accept failed: {e}; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let Some((slot, close)) = take_slot(&slots, &peers, &open, peer.ip(), next_id).await else {
            refused += 1;
            if refused.is_power_of_two() {
                log::warn!(
                    "HTTP connection from {peer} closed: {PER_PEER} already open from that address ({refused} refused so far)"
                );
            }
            continue; // `stream` dropped: closed
        };
        let handler = Arc::clone(&handler);
        let users = security.users.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = async {
                match acceptor {
                    None => connection(stream, handler, users).await,
                    Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection(stream, handler, users).await,
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} took longer than {HEADER_TIMEOUT:?}"),
                    },
                }
            };
            tokio::select! {
                _ = close.notified() => log::debug!("HTTP connection from {peer} closed to make room"),
                done = tokio::time::timeout(CONNECTION_LIFE, served) => {
                    if done.is_err() {
                        log::debug!("HTTP connection from {peer} closed after {CONNECTION_LIFE:?}");
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends.
async fn connection<S>(stream: S, handler: Handler, users: Option<super::web::Users>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| answer(Arc::clone(&handler), users.clone(), request));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        log::debug!("HTTP connection ended: {e}");
    }
}

async fn answer(
    handler: Handler,
    users: Option<super::web::Users>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(users) = users {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // bcrypt is slow on purpose: off the connection's task.
        let allowed = tokio::task::spawn_blocking(move || users.allows(given.as_deref()))
            .await
            .unwrap_or(false);
        if !allowed {
            let mut response = Response::new(Full::new(Bytes::from_static(b"Unauthorized\n")));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"sonde\""));
            return Ok(response);
        }
    }
    let a = if request.method() != Method::GET && request.method() != Method::HEAD {
        Answer {
            status: 405,
            content_type: "text/plain",
            body: "only GET\n".into(),
        }
    } else {
        let path = request.uri().path().to_string();
        let accept = request
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        tokio::task::spawn_blocking(move || handler(&path, &accept))
            .await
            .unwrap_or_else(|e| Answer {
                status: 500,
                content_type: "text/plain",
                body: format!("the answer failed: {e}\n"),
            })
    };
    let mut response = Response::new(Full::new(Bytes::from(a.body)));
    *response.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    Ok(response)
}
