//! A tiny Airwave stand-in on 127.0.0.1 for the tests: real TCP and WebSocket, counts accepted
//! connections, records every frame and every handshake's token, answers the protocol, and can
//! refuse handshakes (or reused tokens), drop or close sockets, push frames and fan published
//! messages out to subscribers.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airwave_client::{Backoff, ClientConfig};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;

/// Failure guard only: nothing in the tests should come anywhere near it.
pub const GUARD: Duration = Duration::from_secs(30);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// How the server answers handshakes.
#[derive(Debug, Clone, Copy)]
pub enum Handshake {
    Accept,
    /// Every handshake gets this HTTP status.
    Refuse(u16),
    /// The first `n` connections get the status, later ones are accepted.
    RefuseFirst(usize, u16),
    /// The handshake succeeds and the server closes the socket at once (a flapping backend).
    AcceptThenClose,
}

#[derive(Debug, Clone)]
pub struct Frame {
    /// 1-based number of the TCP connection it came on.
    pub connection: usize,
    pub value: Value,
}

impl Frame {
    pub fn action(&self) -> &str {
        self.value["action"].as_str().unwrap_or("")
    }

    pub fn channel(&self) -> &str {
        self.value["channel"].as_str().unwrap_or("")
    }
}

#[derive(Debug, Clone)]
enum Control {
    DropAll,
    /// A close frame, as the Management API's `DeleteConnection` ends a socket.
    CloseAll,
    Push(String),
    Publish {
        channel: Option<String>,
        frame: String,
    },
}

struct State {
    accepted: AtomicUsize,
    handshake: Mutex<Handshake>,
    handshake_delay: Duration,
    uris: Mutex<Vec<String>>,
    /// The `Sec-WebSocket-Protocol` offer of every handshake, in order.
    offers: Mutex<Vec<Option<String>>>,
    /// Refuse (401) a handshake whose token an earlier one carried, as the real server refuses
    /// a token that expired.
    refuse_reused_tokens: std::sync::atomic::AtomicBool,
    tokens_seen: Mutex<HashSet<String>>,
    /// Per action, replies to use instead of the normal one; `None` means stay silent.
    scripted: Mutex<HashMap<String, VecDeque<Option<Value>>>>,
    published: AtomicUsize,
    /// Connections (by number) on which the client sent a close frame.
    closed_by_client: Mutex<Vec<usize>>,
    control: broadcast::Sender<Control>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    frames: mpsc::UnboundedReceiver<Frame>,
    /// Frames taken off the channel by a wait that did not want them yet.
    backlog: VecDeque<Frame>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Handshake::Accept, Duration::ZERO).await
    }

    pub async fn start_with(handshake: Handshake, handshake_delay: Duration) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, _) = broadcast::channel(1024);
        let state = Arc::new(State {
            accepted: AtomicUsize::new(0),
            handshake: Mutex::new(handshake),
            handshake_delay,
            uris: Mutex::new(Vec::new()),
            offers: Mutex::new(Vec::new()),
            refuse_reused_tokens: std::sync::atomic::AtomicBool::new(false),
            tokens_seen: Mutex::new(HashSet::new()),
            scripted: Mutex::new(HashMap::new()),
            published: AtomicUsize::new(0),
            closed_by_client: Mutex::new(Vec::new()),
            control,
        });
        let (frames_tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(accept_loop(listener, Arc::clone(&state), frames_tx));
        TestServer {
            addr,
            state,
            frames,
            backlog: VecDeque::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/test", self.addr)
    }

    /// A client configuration with fast retries, so retry tests take milliseconds.
    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(&self.url())
            .unwrap()
            .with_backoff(Backoff::new(
                Duration::from_millis(5),
                2.0,
                Duration::from_millis(40),
                4,
            ))
            .with_rng_seed(1)
    }

    /// TCP connections accepted so far (refused handshakes included).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections (by number) on which the client sent a close frame, in order.
    pub fn closed_by_client(&self) -> Vec<usize> {
        self.state.closed_by_client.lock().unwrap().clone()
    }

    pub fn set_handshake(&self, handshake: Handshake) {
        *self.state.handshake.lock().unwrap() = handshake;
    }

    /// Request URIs of every handshake, in order.
    pub fn uris(&self) -> Vec<String> {
        self.state.uris.lock().unwrap().clone()
    }

    /// The `Sec-WebSocket-Protocol` header of every handshake, in order.
    pub fn offers(&self) -> Vec<Option<String>> {
        self.state.offers.lock().unwrap().clone()
    }

    /// From now on a handshake carrying a token already seen is refused with 401.
    pub fn refuse_reused_tokens(&self) {
        self.state.refuse_reused_tokens.store(true, Ordering::SeqCst);
    }

    /// The next frame with `action` gets `reply` (`None`: no reply at all) instead of the usual.
    pub fn script(&self, action: &str, reply: Option<Value>) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .entry(action.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// Closes every open socket abruptly (no close frame), like a network failure.
    pub fn drop_all(&self) {
        let _ = self.state.control.send(Control::DropAll);
    }

    /// Sends a text frame to every open socket.
    pub fn push(&self, frame: Value) {
        let _ = self.state.control.send(Control::Push(frame.to_string()));
    }

    pub fn push_message(&self, id: &str, data: Value) {
        self.push(json!({"type": "message", "id": id, "channel": "c", "data": data}));
    }

    /// What the real server does to end a connection: a `closing` frame saying why, then the
    /// socket is closed.
    pub fn close_all_with(&self, code: &str, message: &str) {
        self.push(json!({"type": "closing", "code": code, "message": message}));
        let _ = self.state.control.send(Control::CloseAll);
    }

    /// The next frame from any connection.
    pub async fn next_frame(&mut self) -> Frame {
        if let Some(frame) = self.backlog.pop_front() {
            return frame;
        }
        within("a frame from the client", self.frames.recv())
            .await
            .expect("server stopped")
    }

    /// The next frame matching `wanted`; others are skipped.
    pub async fn wait_frame(&mut self, wanted: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let frame = self.next_frame().await;
            if wanted(&frame) {
                return frame;
            }
        }
    }

    /// Every frame received so far without waiting.
    pub fn drain_frames(&mut self) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self.backlog.drain(..).collect();
        while let Ok(frame) = self.frames.try_recv() {
            frames.push(frame);
        }
        frames
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, frames: mpsc::UnboundedSender<Frame>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let number = state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(handle(tcp, number, Arc::clone(&state), frames.clone()));
    }
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn handle(tcp: TcpStream, number: usize, state: Arc<State>, frames: mpsc::UnboundedSender<Frame>) {
    // Before the handshake, so nothing sent once the client is connected can be missed.
    let mut control = state.control.subscribe();
    tokio::time::sleep(state.handshake_delay).await;
    let handshake = *state.handshake.lock().unwrap();
    let refuse = match handshake {
        Handshake::Accept | Handshake::AcceptThenClose => None,
        Handshake::Refuse(status) => Some(status),
        Handshake::RefuseFirst(n, status) => (number <= n).then_some(status),
    };
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        state.uris.lock().unwrap().push(request.uri().to_string());
        let offer = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|offer| offer.to_str().ok())
            .map(str::to_owned);
        state.offers.lock().unwrap().push(offer.clone());
        let offered: Vec<&str> = offer.iter().flat_map(|o| o.split(',')).map(str::trim).collect();
        // Where the real server looks: the query parameter, then a JWT-shaped subprotocol.
        let token = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("token="))
            .or_else(|| offered.iter().copied().find(|p| p.split('.').count() == 3));
        let reused = token.is_some_and(|token| !state.tokens_seen.lock().unwrap().insert(token.to_owned()));
        let refuse = match refuse {
            None if reused && state.refuse_reused_tokens.load(Ordering::SeqCst) => Some(401),
            refuse => refuse,
        };
        // As `$connect` answers: the version the client offered is selected.
        for version in [airwave_client::SUBPROTOCOL, "airwave"] {
            if offered.contains(&version) {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static(version));
                break;
            }
        }
        match refuse {
            None => Ok(response),
            Some(status) => {
                let mut refusal = ErrorResponse::new(Some("refused".to_owned()));
                *refusal.status_mut() = StatusCode::from_u16(status).unwrap();
                Err(refusal)
            }
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    if matches!(handshake, Handshake::AcceptThenClose) {
        let _ = ws.close(None).await;
        return;
    }
    let mut channels: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { return };
                if let Message::Close(_) = frame {
                    state.closed_by_client.lock().unwrap().push(number);
                    continue;
                }
                let Message::Text(text) = frame else { continue };
                let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let action = value["action"].as_str().unwrap_or("").to_owned();
                let channel = value["channel"].as_str().map(str::to_owned);
                let _ = frames.send(Frame { connection: number, value: value.clone() });
                let scripted = state.scripted.lock().unwrap().get_mut(&action).and_then(VecDeque::pop_front);
                let reply = match scripted {
                    Some(reply) => reply,
                    // Replies it makes itself repeat the request id, except the pong, which
                    // API Gateway's mock integration gives without one; scripted ones have
                    // none, as from a server older than request ids.
                    None => {
                        let mut reply = normal_reply(&state, number, &value, &action, channel.as_deref(), &mut channels);
                        if let (Some(id), false) = (value.get("id"), action == "ping") {
                            reply["id"] = id.clone();
                        }
                        Some(reply)
                    }
                };
                if let Some(reply) = reply {
                    if ws.send(Message::text(reply.to_string())).await.is_err() {
                        return;
                    }
                }
            }
            control = control.recv() => match control {
                Ok(Control::DropAll) | Err(broadcast::error::RecvError::Closed) => return,
                Ok(Control::CloseAll) => {
                    let _ = ws.close(None).await;
                    return;
                }
                Ok(Control::Push(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Ok(Control::Publish { channel, frame }) => {
                    let wanted = channel.as_ref().is_none_or(|c| channels.contains(c));
                    if wanted && ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
    }
}

fn normal_reply(
    state: &State,
    number: usize,
    value: &Value,
    action: &str,
    channel: Option<&str>,
    channels: &mut HashSet<String>,
) -> Value {
    match (action, channel) {
        ("ping", _) => json!({"type": "pong"}),
        ("subscribe", Some(c)) => {
            channels.insert(c.to_owned());
            json!({"type": "subscribed", "channel": c})
        }
        ("unsubscribe", Some(c)) => {
            channels.remove(c);
            json!({"type": "unsubscribed", "channel": c})
        }
        ("publish", _) => {
            let id = format!("p{}", state.published.fetch_add(1, Ordering::SeqCst));
            let message = json!({"type": "message", "id": id, "channel": channel, "data": value["data"]});
            let _ = state.control.send(Control::Publish {
                channel: channel.map(str::to_owned),
                frame: message.to_string(),
            });
            json!({"type": "published", "message_id": id})
        }
        ("stats", _) => {
            // Which connection answered, in a field of the real stats reply.
            json!({"type": "stats", "open_connections": number, "distinct_users": 0, "max_connections": 0,
                   "max_connections_per_user": 0, "max_connections_per_ip": 0, "free_slots": null,
                   "connect_attempts_per_ip": 0, "window_seconds": 60, "throttled_attempts_in_window": 0,
                   "as_of": 1_700_000_000})
        }
        _ => json!({"type": "error", "code": "unknown_action", "message": "unknown action"}),
    }
}
