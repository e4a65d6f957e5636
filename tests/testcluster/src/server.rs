//! The listener and its connections, the controller loop, and the reachability switch that
//! lets a test take the server off the network and back on the same address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::controllers::{Controllers, IDLE};
use crate::http;
use crate::state::Shared;

/// Binds `addr` with `SO_REUSEADDR`, so that the same port can be taken again after the
/// server was made unreachable.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections while `reachable` is true. When it turns false the listening socket
/// is closed (new connections are refused) and every open connection, watches included, is
/// dropped; when it turns true again the same address is bound anew. Each switch is
/// acknowledged on `ack` once done, as (the state switched to, whether it took effect).
/// Ends when `shutdown` turns true.
pub async fn serve(
    shared: Arc<Shared>,
    first: TcpListener,
    tls: TlsAcceptor,
    mut reachable: watch::Receiver<bool>,
    ack: std::sync::mpsc::Sender<(bool, bool)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = match first.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut listener = Some(first);
    // Every open connection; aborting them closes their sockets and ends their watches.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                connections.shutdown().await;
                return;
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = reachable.changed() => {
                if changed.is_err() {
                    return;
                }
                let up = *reachable.borrow_and_update();
                if up {
                    if listener.is_none() {
                        let mut tries = 0;
                        listener = loop {
                            match bind(addr) {
                                Ok(l) => break Some(l),
                                Err(_) if tries < 100 => {
                                    tries += 1;
                                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                }
                                Err(_) => break None,
                            }
                        };
                    }
                    let _ = ack.send((true, listener.is_some()));
                } else {
                    listener = None;
                    // Waits until every connection task is gone, so that nothing more is
                    // written to any client once the switch is acknowledged.
                    connections.shutdown().await;
                    let _ = ack.send((false, true));
                }
            }
            accepted = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(stream) = tls.accept(stream).await else { return };
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(http::handle(shared, req).await) }
                    });
                    // Upgrades: pods/portforward turns its connection into a WebSocket.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
}

/// Runs the controllers whenever the store changed or timed work is due.
pub async fn run_controllers(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut controllers = Controllers::default();
    loop {
        let next = {
            let mut st = shared.lock();
            controllers.reconcile(&mut st, &shared.opts, Instant::now())
        };
        let wake = next.unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
