//! `pods/{name}/portforward` over SPDY/3.1, as `kubectl port-forward` speaks it when it
//! upgrades with `Upgrade: SPDY/3.1` and `X-Stream-Protocol-Version: portforward.k8s.io`
//! (client-go's `portforward` over `httpstream/spdy`, the moby `spdystream` framer).
//!
//! Per forwarded connection the client opens two streams, both with the headers `streamtype`
//! (`error` or `data`), `port` and `requestid`; the server answers each `SYN_STREAM` with a
//! `SYN_REPLY`, relays the data stream's bytes to the pod's port both ways, and writes a
//! failed connect's message on the error stream, as the kubelet does. `PING`s are echoed.
//! Header blocks are zlib streams, one per direction and connection, with the SPDY/3
//! dictionary; the server's own blocks are compressed without it (a zlib reader given a
//! dictionary reads those too). No flow control is enforced, as `spdystream` enforces none.

use std::collections::HashMap;
use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// The subprotocol version header's value for port-forwarding.
pub(super) const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;

/// The words of SPDY/3's header compression dictionary (each written as a 32-bit length
/// and the word), followed by [`DICTIONARY_TAIL`] as it is (draft-mbelshe-httpbis-spdy-00,
/// 2.6.10.1).
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, ",
    "Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS {
        d.extend_from_slice(&u32::try_from(w.len()).unwrap_or(0).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// A frame from the client, its header block already read.
#[derive(Debug)]
enum Frame {
    SynStream {
        id: u32,
        headers: HashMap<String, String>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    Rst(u32),
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, and anything else: nothing to do.
    Other,
}

/// Reads the client's frames, inflating header blocks with the one zlib stream of the
/// connection; `None` at the end of the stream or on a malformed frame.
struct Reader<R> {
    io: R,
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 8];
        self.io.read_exact(&mut head).await.ok()?;
        let flags = head[4];
        let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await.ok()?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Some(Frame::Data {
                id,
                fin,
                data: body,
            });
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize| {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
        };
        Some(match kind {
            SYN_STREAM => {
                let id = word(0)?;
                let headers = self.headers(body.get(10..)?)?;
                Frame::SynStream { id, headers }
            }
            RST_STREAM => Frame::Rst(word(0)?),
            PING => Frame::Ping(u32::from_be_bytes(body.get(0..4)?.try_into().ok()?)),
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        })
    }

    /// A header block: inflated (with the dictionary when the stream asks for it), then
    /// `count`, and `count` pairs of length-prefixed names and values.
    fn headers(&mut self, block: &[u8]) -> Option<HashMap<String, String>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            out.reserve(1024);
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dictionary).ok()?;
                }
                Err(_) => return None,
            }
            let used = usize::try_from(self.inflate.total_in() - before).ok()?;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = out.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let len = |b: &[u8]| usize::try_from(u32::from_be_bytes(b.try_into().ok()?)).ok();
        let count = len(take(4)?)?;
        let mut headers = HashMap::new();
        for _ in 0..count {
            let n = len(take(4)?)?;
            let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
            let n = len(take(4)?)?;
            let value = String::from_utf8_lossy(take(n)?).into_owned();
            headers.insert(name, value);
        }
        Some(headers)
    }
}

/// Writes the server's frames, deflating header blocks with the connection's one zlib
/// stream.
struct Writer<W> {
    io: W,
    deflate: Compress,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn control(&mut self, kind: u16, flags: u8, body: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(body.len()).unwrap_or(0);
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&[0x80, 3]);
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&len.to_be_bytes()[1..]);
        frame.extend_from_slice(body);
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    async fn data(&mut self, id: u32, fin: bool, data: &[u8]) -> std::io::Result<()> {
        for chunk in data
            .chunks(0xff_ffff)
            .chain(data.is_empty().then_some(&[][..]))
        {
            let len = u32::try_from(chunk.len()).unwrap_or(0);
            let mut frame = Vec::with_capacity(8 + chunk.len());
            frame.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            frame.push(if fin { FLAG_FIN } else { 0 });
            frame.extend_from_slice(&len.to_be_bytes()[1..]);
            frame.extend_from_slice(chunk);
            self.io.write_all(&frame).await?;
        }
        self.io.flush().await
    }

    /// `SYN_REPLY` for stream `id`, with no headers.
    async fn reply(&mut self, id: u32) -> std::io::Result<()> {
        let mut body = (id & 0x7fff_ffff).to_be_bytes().to_vec();
        body.extend_from_slice(&self.block(&[0, 0, 0, 0]));
        self.control(SYN_REPLY, 0, &body).await
    }

    fn block(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        let _ = self
            .deflate
            .compress_vec(plain, &mut out, FlushCompress::Sync);
        out
    }
}

/// One forwarded connection's streams, by `requestid`.
#[derive(Default)]
struct Request {
    error: Option<u32>,
    data: Option<u32>,
    to_pod: Option<OwnedWriteHalf>,
}

/// Serves one upgraded connection: `targets` maps the pod's ports to where the test
/// registered them.
pub(super) async fn serve<S>(io: S, targets: HashMap<u16, SocketAddr>, pod: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let mut reader = Reader {
        io: read,
        inflate: Decompress::new(true),
        dictionary: dictionary(),
    };
    let mut writer = Writer {
        io: write,
        deflate: Compress::new(Compression::default(), true),
    };
    let (frames_tx, mut frames) = mpsc::channel::<Frame>(16);
    tokio::spawn(async move {
        while let Some(f) = reader.next().await {
            if frames_tx.send(f).await.is_err() {
                return;
            }
        }
    });
    // Bytes from the pods, by data stream id; empty at the end.
    let (pods_tx, mut from_pods) = mpsc::channel::<(u32, Vec<u8>)>(16);
    let mut requests: HashMap<String, Request> = HashMap::new();
    let mut stream_request: HashMap<u32, String> = HashMap::new();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                let ok = match frame {
                    Frame::SynStream { id, headers } => {
                        let request = headers.get("requestid").cloned().unwrap_or_default();
                        stream_request.insert(id, request.clone());
                        let r = requests.entry(request).or_default();
                        let replied = writer.reply(id).await;
                        match headers.get("streamtype").map(String::as_str) {
                            Some("error") => r.error = Some(id),
                            Some("data") => {
                                r.data = Some(id);
                                let port = headers.get("port").and_then(|p| p.parse::<u16>().ok());
                                let to = port.and_then(|p| targets.get(&p).copied());
                                match connect(to).await {
                                    Ok(stream) => {
                                        let (mut from, into) = stream.into_split();
                                        r.to_pod = Some(into);
                                        let tx = pods_tx.clone();
                                        tokio::spawn(async move {
                                            let mut buf = vec![0u8; 16 * 1024];
                                            while let Ok(n) = from.read(&mut buf).await {
                                                if n == 0 || tx.send((id, buf[..n].to_vec())).await.is_err() {
                                                    break;
                                                }
                                            }
                                            let _ = tx.send((id, Vec::new())).await;
                                        });
                                    }
                                    Err(why) => {
                                        let p = port.map_or_else(|| "?".to_string(), |p| p.to_string());
                                        let text = format!(
                                            "error forwarding port {p} to pod {pod}: failed to connect to port {p}: {why}"
                                        );
                                        if let Some(e) = r.error {
                                            let _ = writer.data(e, true, text.as_bytes()).await;
                                        }
                                        let _ = writer.data(id, true, &[]).await;
                                    }
                                }
                            }
                            _ => {}
                        }
                        replied.is_ok()
                    }
                    Frame::Data { id, fin, data } => {
                        if let Some(r) = stream_request.get(&id).and_then(|q| requests.get_mut(q))
                            && r.data == Some(id)
                            && let Some(w) = r.to_pod.as_mut()
                        {
                            if !data.is_empty() && w.write_all(&data).await.is_err() {
                                r.to_pod = None;
                            } else if fin {
                                let _ = w.shutdown().await;
                            }
                        }
                        true
                    }
                    Frame::Rst(id) => {
                        if let Some(r) = stream_request.remove(&id).and_then(|q| requests.get_mut(&q))
                            && r.data == Some(id)
                        {
                            r.to_pod = None;
                        }
                        true
                    }
                    Frame::Ping(n) => writer.control(PING, 0, &n.to_be_bytes()).await.is_ok(),
                    Frame::GoAway => return,
                    Frame::Other => true,
                };
                if !ok {
                    return;
                }
            }
            got = from_pods.recv() => {
                let Some((id, bytes)) = got else { return };
                if writer.data(id, bytes.is_empty(), &bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn connect(to: Option<SocketAddr>) -> Result<TcpStream, String> {
    match to {
        Some(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
        None => Err("nothing listens on that port in the emulator".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Its Adler-32, which a zlib stream that uses it names in its header.
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(&d).ok(), Some(0xe3c6_a7c2));
    }
}
