//! `pods/{name}/portforward` over WebSocket, as an API server serves it from the kubelet:
//! the binary channel protocol (`v4.channel.k8s.io`, or no subprotocol) that kube-rs speaks.
//! Port `i` of the `ports` query (repeated, or comma-separated) has two channels: data
//! `2i` and error `2i + 1`. The server first sends, on both, the port number (two bytes,
//! little-endian) after the channel byte; from then on every message is a channel byte and
//! payload. The "container port" is whatever the test registered with
//! [`crate::TestCluster::forward`]; a port with nothing registered, or refusing, gets a
//! message on its error channel, as the kubelet reports a failed connect.
//!
//! Authorized as the API server does: the upgrade is a GET, so `get pods/portforward`; from
//! 1.35 (the reported minor version) `create` as well.
//!
//! `kubectl port-forward`'s SPDY/3.1 is served by `spdy`, both as a POST with `Upgrade:
//! SPDY/3.1` (authorized as `create`) and tunnelled in WebSocket binary messages
//! (subprotocol `SPDY/3.1+portforward.k8s.io`, a GET, what kubectl tries first from 1.31).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Body, Query, Target, error_response, full, spdy};
use crate::state::Shared;
use crate::status::ApiError;
use crate::store::Key;

/// The binary channel subprotocol the kubelet's port-forward accepts.
const V4_BINARY: &str = "v4.channel.k8s.io";
/// SPDY/3.1 tunnelled in WebSocket binary messages (what `kubectl port-forward` tries first
/// from 1.31): the API server's tunneling handler.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Upgrades a `pods/{name}/portforward` request to a WebSocket and relays its ports.
pub(super) fn serve(
    shared: &Arc<Shared>,
    t: &Target,
    q: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    // From 1.35 the upgrade also needs `create` (AuthorizePodWebsocketUpgradeCreatePermission,
    // on by default); before, the GET's `get` was all (checked with the other faults).
    let needs_create = shared.opts.minor >= 35;
    if needs_create
        && shared
            .lock()
            .faults
            .denials
            .iter()
            .any(|r| r.matches("create", "pods/portforward"))
    {
        return error_response(&ApiError::forbidden(
            t.rt,
            "create",
            "pods/portforward",
            t.name.as_deref(),
            t.namespace.as_deref(),
        ));
    }
    if shared
        .lock()
        .store
        .get(&Key::new("pods", &ns, &name))
        .is_none()
    {
        return error_response(&ApiError::not_found(t.rt, &name));
    }
    if is_spdy(&req) {
        return serve_spdy(shared, &ns, &name, req);
    }
    let Some((accept, protocol)) = handshake(&req) else {
        return error_response(&ApiError::bad_request(
            "this emulator serves pods/portforward over WebSocket (v4.channel.k8s.io) and SPDY/3.1; \
             the SPDY tunnelled in WebSocket (SPDY/3.1+portforward.k8s.io) is not served",
        ));
    };
    // The SPDY tunnel names its ports in each stream's headers, not in the query.
    let ports = match ports(q) {
        Ok(p) => p,
        Err(_) if protocol == Some(SPDY_TUNNEL) => Vec::new(),
        Err(e) => return error_response(&e),
    };
    let targets: Vec<(u16, Option<SocketAddr>)> = {
        let st = shared.lock();
        ports
            .iter()
            .map(|&p| (p, st.forwards.get(&(ns.clone(), name.clone(), p)).copied()))
            .collect()
    };
    let pod = format!("{ns}/{name}");
    let tunnel = protocol == Some(SPDY_TUNNEL);
    let registered = registered(shared, &ns, &name);
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            if tunnel {
                spdy::serve(untunnel(ws), registered, pod).await;
            } else {
                relay(ws, targets, pod).await;
            }
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(p),
        );
    }
    r
}

/// Whether the request upgrades to SPDY/3.1 (`kubectl port-forward`'s own framing).
fn is_spdy(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

/// Upgrades to SPDY/3.1 and serves the pod's registered ports (the ports come in each
/// stream's headers, not in the query).
fn serve_spdy(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let offered = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == spdy::PORT_FORWARD_PROTOCOL);
    if !offered {
        return error_response(&ApiError::bad_request(format!(
            "unable to upgrade: the client offers no {} stream protocol",
            spdy::PORT_FORWARD_PROTOCOL
        )));
    }
    let targets = registered(shared, ns, name);
    let pod = format!("{ns}/{name}");
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            spdy::serve(TokioIo::new(upgraded), targets, pod).await;
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("SPDY/3.1"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        "x-stream-protocol-version",
        header::HeaderValue::from_static(spdy::PORT_FORWARD_PROTOCOL),
    );
    r
}

/// Every port the test registered for the pod.
fn registered(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
) -> std::collections::HashMap<u16, SocketAddr> {
    shared
        .lock()
        .forwards
        .iter()
        .filter(|((n, p, _), _)| n == ns && p == name)
        .map(|((_, _, port), to)| (*port, *to))
        .collect()
}

/// The bytes of a WebSocket's binary messages as one stream, both ways (client-go's
/// `TunnelingConnection`: each message is a piece of the SPDY stream, nothing more).
fn untunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut sink, mut source) = ws.split();
    let (mut read, mut write) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if write.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 || sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    theirs
}

/// The ports asked for: `ports=80&ports=81` or `ports=80,81`.
fn ports(q: &Query) -> Result<Vec<u16>, ApiError> {
    let mut out = Vec::new();
    for (_, v) in q.0.iter().filter(|(k, _)| k == "ports") {
        for p in v.split(',').filter(|p| !p.is_empty()) {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid port {p:?}: must be between 1 and 65535"
                    )));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(ApiError::bad_request(
            "at least one port must be given in the ports query parameter",
        ));
    }
    // Two channels a port, numbered in one byte.
    if out.len() > 127 {
        return Err(ApiError::bad_request("at most 127 ports at a time"));
    }
    Ok(out)
}

/// The `Sec-WebSocket-Accept` answer and the subprotocol chosen, if the request is a
/// WebSocket upgrade offering the binary channel protocol (or none).
fn handshake(req: &Request<Incoming>) -> Option<(String, Option<&'static str>)> {
    let h = req.headers();
    let text = |name| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !text(header::UPGRADE).eq_ignore_ascii_case("websocket") {
        return None;
    }
    let key = h.get(header::SEC_WEBSOCKET_KEY)?;
    let offered: Vec<&str> = text(header::SEC_WEBSOCKET_PROTOCOL)
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = match offered.as_slice() {
        [] => None,
        _ if offered.contains(&V4_BINARY) => Some(V4_BINARY),
        _ if offered.contains(&SPDY_TUNNEL) => Some(SPDY_TUNNEL),
        _ => return None,
    };
    Some((derive_accept_key(key.as_bytes()), protocol))
}

/// Relays every port's bytes between the WebSocket and the registered listeners, until the
/// client closes or every port's connection has ended.
async fn relay<S>(ws: WebSocketStream<S>, targets: Vec<(u16, Option<SocketAddr>)>, pod: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let (tx, mut from_pods) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let mut writers = Vec::new();
    let mut open = 0usize;
    for (i, (port, to)) in targets.into_iter().enumerate() {
        let data = u8::try_from(2 * i).unwrap_or(u8::MAX - 1); // ports() allows at most 127
        let [lo, hi] = port.to_le_bytes();
        for ch in [data, data + 1] {
            if sink.send(Message::binary(vec![ch, lo, hi])).await.is_err() {
                return;
            }
        }
        let conn = match to {
            Some(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
            None => Err("nothing listens on that port in the emulator".to_string()),
        };
        match conn {
            Ok(stream) => {
                let (mut read, write) = stream.into_split();
                writers.push(Some(write));
                open += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0 || tx.send((data, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                    let _ = tx.send((data, Vec::new())).await;
                });
            }
            Err(why) => {
                writers.push(None);
                let text = format!(
                    "error forwarding port {port} to pod {pod}: failed to connect to port {port}: {why}"
                );
                let mut msg = vec![data + 1];
                msg.extend_from_slice(text.as_bytes());
                let _ = sink.send(Message::binary(msg)).await;
            }
        }
    }
    drop(tx);
    while open > 0 {
        tokio::select! {
            got = from_pods.recv() => match got {
                Some((_, bytes)) if bytes.is_empty() => open -= 1,
                Some((ch, bytes)) => {
                    let mut msg = Vec::with_capacity(bytes.len() + 1);
                    msg.push(ch);
                    msg.extend_from_slice(&bytes);
                    if sink.send(Message::binary(msg)).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            msg = source.next() => match msg {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    let port = usize::from(b[0] / 2);
                    if b[0] % 2 == 0
                        && let Some(Some(w)) = writers.get_mut(port)
                        && w.write_all(&b[1..]).await.is_err()
                    {
                        writers[port] = None;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.close().await;
}
