//! A real headless Chromium, driven over the DevTools protocol (CDP), for the web UI's tests.
//!
//! Why by hand rather than a CDP crate: the tests need a dozen commands (navigate,
//! evaluate, screenshot, mouse and keyboard input, viewport), and the crates generate
//! bindings for the whole protocol, which would double the test build. CDP is JSON over a
//! WebSocket, and the suite already has a WebSocket client.
//!
//! Clicks and typing go through `Input.*`, so they land where a person's would: on the
//! element under the pointer, through focus and the browser's own event dispatch.
//!
//! Chromium is `SKEIN_CHROMIUM`, else `chromium` on the `PATH`. Without one, [`Browser::launch`]
//! answers `None` and the browser tests pass over themselves, saying so, unless
//! `SKEIN_BROWSER_TESTS=required` (as `.ci/run` sets it), when a missing browser fails them.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use futures::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    sync::{Semaphore, SemaphorePermit, oneshot},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use super::PATIENCE;

/// At most two browsers at once: each is several processes, and CI has two cores.
static SLOTS: Semaphore = Semaphore::const_new(2);

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

pub struct Browser {
    child: Child,
    _profile: TempDir,
    _slot: SemaphorePermit<'static>,
    sink: Arc<tokio::sync::Mutex<Sink>>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    /// Uncaught exceptions and failed promises in any page, as CDP reported them.
    errors: Arc<Mutex<Vec<String>>>,
}

/// One tab.
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SKEIN_CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts Chromium with a fresh profile, or `None` when there is none to start.
    pub async fn launch() -> Option<Self> {
        let Some(binary) = chromium() else {
            assert!(
                std::env::var("SKEIN_BROWSER_TESTS").as_deref() != Ok("required"),
                "SKEIN_BROWSER_TESTS=required but no Chromium was found (apt-get install chromium)"
            );
            eprintln!("no Chromium found (set SKEIN_CHROMIUM or install chromium): skipping");
            return None;
        };
        let slot = SLOTS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that dropping the browser ends its helpers too.
            .process_group(0)
            .spawn()
            .expect("Chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("Chromium exited before it listened");
        })
        .await
        .expect("Chromium listens in time");
        // Keep reading, so that Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("the DevTools socket opens");
        let (sink, mut source) = socket.split();
        let pending: Pending = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (routes, found) = (pending.clone(), errors.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = source.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if let Some(id) = value["id"].as_u64() {
                    if let Some(reply) = routes.lock().unwrap().remove(&id) {
                        let result = match value.get("error") {
                            Some(error) => Err(error.clone()),
                            None => Ok(value["result"].clone()),
                        };
                        let _ = reply.send(result);
                    }
                } else if value["method"] == "Runtime.exceptionThrown" {
                    let details = &value["params"]["exceptionDetails"];
                    let text = details["exception"]["description"]
                        .as_str()
                        .or(details["text"].as_str())
                        .unwrap_or("an exception");
                    found.lock().unwrap().push(text.to_owned());
                }
            }
        });
        Some(Self {
            child,
            _profile: profile,
            _slot: slot,
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            errors,
        })
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, reply);
        self.sink
            .lock()
            .await
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("the DevTools socket takes the command");
        match tokio::time::timeout(PATIENCE, answer).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method} failed: {error}"),
            _ => panic!("{method} got no answer in time"),
        }
    }

    /// A new tab showing `about:blank`.
    pub async fn page(&self) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let page = Page {
            browser: self,
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }

    /// Every uncaught exception the pages have thrown so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and the renderers it started.
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok())
            && pid > 1
        {
            // SAFETY: killpg has no memory effects; the group is the one Chromium leads.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
    }
}

impl Page<'_> {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value; a thrown error
    /// fails the test.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy and returns its value; fails after twice
    /// [`PATIENCE`] (a browser on a loaded two-core machine is slow) with `what` and the
    /// page's visible text.
    pub async fn wait_until(&self, expression: &str, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        loop {
            let value = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
                )
                .await;
            // A throw or a rejected promise counts as "not yet".
            let value = value["result"]["value"].clone();
            if !matches!(value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("")
            {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.eval("document.body.innerText").await;
                panic!("gave up waiting until {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Opens `url` and waits for the new document to finish loading.
    pub async fn goto(&self, url: &str) {
        self.eval("window.__leaving = true").await;
        self.call("Page.navigate", json!({"url": url})).await;
        self.loaded().await;
    }

    pub async fn reload(&self) {
        self.eval("window.__leaving = true").await;
        self.call("Page.reload", json!({})).await;
        self.loaded().await;
    }

    async fn loaded(&self) {
        self.wait_until(
            "!window.__leaving && document.readyState === 'complete'",
            "the new document has loaded",
        )
        .await;
    }

    /// Where `selector`'s element is once it is on screen, scrolled into view, and the
    /// topmost element at its centre.
    async fn centre(&self, selector: &str) -> (f64, f64) {
        let selector = serde_json::to_string(selector).unwrap();
        let point = self
            .wait_until(
                &format!(
                    "(() => {{ const e = document.querySelector({selector});
                       if (!e || !e.getClientRects().length || e.disabled) return null;
                       e.scrollIntoView({{block: 'center'}});
                       const r = e.getBoundingClientRect();
                       const [x, y] = [r.x + r.width / 2, r.y + r.height / 2];
                       // Still laying out (or covered): a click there would land elsewhere.
                       const hit = document.elementFromPoint(x, y);
                       return hit && e.contains(hit) ? [x, y] : null; }})()"
                ),
                &format!("{selector} can be clicked"),
            )
            .await;
        (point[0].as_f64().unwrap(), point[1].as_f64().unwrap())
    }

    /// Clicks the element with the mouse, as a person would. The page may still move under
    /// the pointer between finding the element and pressing (a replayed message scrolls
    /// it, a re-render replaces the element): a probe on the element tells whether the
    /// click reached it, and a click that missed is made again.
    pub async fn click(&self, selector: &str) {
        let quoted = serde_json::to_string(selector).unwrap();
        for _ in 0..5 {
            let (x, y) = self.centre(selector).await;
            self.eval(&format!(
                "(() => {{ const e = document.querySelector({quoted});
                   window.__clicked = false;
                   window.__probe = () => {{ window.__clicked = true; }};
                   window.__probed = e;
                   e.addEventListener('click', window.__probe, {{ capture: true }}); }})()"
            ))
            .await;
            for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
                self.call(
                    "Input.dispatchMouseEvent",
                    json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
                )
                .await;
            }
            // A click that loaded another document leaves no probe behind: it landed.
            let missed = self
                .eval(
                    "(() => { if (window.__probed === undefined) return false;
                       window.__probed.removeEventListener('click', window.__probe, { capture: true });
                       return !window.__clicked; })()",
                )
                .await;
            if missed != json!(true) {
                return;
            }
        }
        panic!("clicks on {selector} kept missing it: the page moved under the pointer");
    }

    /// Turns the mouse wheel over the middle of the page, as a reader scrolling does.
    pub async fn wheel(&self, delta_y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseWheel", "x": 400, "y": 400, "deltaX": 0, "deltaY": delta_y}),
        )
        .await;
    }

    /// Clicks into a text field, clears it and types `text`.
    pub async fn fill(&self, selector: &str, text: &str) {
        self.click(selector).await;
        let selector = serde_json::to_string(selector).unwrap();
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector}); e.value = '';
               e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
        ))
        .await;
        self.type_text(text).await;
    }

    /// Presses Enter where the focus is.
    pub async fn press_enter(&self) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                       "text": if kind == "keyDown" { "\r" } else { "" }}),
            )
            .await;
        }
    }

    /// Presses a key where the focus is, as a keyboard does: `Tab`, `Space`, `ArrowDown`,
    /// `Enter` or `Escape`.
    pub async fn press(&self, key: &str) {
        let (name, code, vk, text) = match key {
            "Tab" => ("Tab", "Tab", 9, ""),
            "Space" => (" ", "Space", 32, " "),
            "ArrowDown" => ("ArrowDown", "ArrowDown", 40, ""),
            "Enter" => ("Enter", "Enter", 13, "\r"),
            "Escape" => ("Escape", "Escape", 27, ""),
            other => panic!("no such key here: {other}"),
        };
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": name, "code": code, "windowsVirtualKeyCode": vk,
                       "text": if kind == "keyDown" { text } else { "" }}),
            )
            .await;
        }
    }

    /// Presses Tab until the focus is on `selector` (fails after 80 presses): how someone
    /// without a mouse gets there.
    pub async fn tab_to(&self, selector: &str) {
        let matches = format!(
            "document.activeElement?.matches({}) ?? false",
            serde_json::to_string(selector).unwrap()
        );
        for _ in 0..80 {
            if self.eval(&matches).await == Value::Bool(true) {
                return;
            }
            self.press("Tab").await;
        }
        panic!("Tab never reached {selector}");
    }

    /// Types `text` where the focus is.
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Picks an option of a `<select>` by value (a native dropdown cannot be clicked
    /// headless), with the `change` event a person's choice sends.
    pub async fn choose(&self, selector: &str, value: &str) {
        self.centre(selector).await;
        let (selector, value) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector}); e.focus(); e.value = {value};
               e.dispatchEvent(new Event('change', {{bubbles: true}})); }})()"
        ))
        .await;
    }

    /// The text of the element, or null when there is none.
    pub async fn text(&self, selector: &str) -> Value {
        let selector = serde_json::to_string(selector).unwrap();
        self.eval(&format!(
            "document.querySelector({selector})?.innerText ?? null"
        ))
        .await
    }

    /// Lets pages of `origin` read and write the clipboard without asking.
    pub async fn grant_clipboard(&self, origin: &str) {
        self.browser
            .call(
                None,
                "Browser.grantPermissions",
                json!({"origin": origin.trim_end_matches('/'),
                       "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
            )
            .await;
    }

    /// The viewport of a laptop or of a phone.
    pub async fn resize(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// Saves the whole page as a PNG under the tests' output directory and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// The accessibility checker the browser tests run on every view: axe-core, from npm,
/// pinned, installed under `target/` the first time it is needed.
const AXE_CORE: &str = "axe-core@4.10.3";

/// axe-core's script, or `None` (the test then passes over itself, saying so) where npm
/// cannot install it, unless `SKEIN_BROWSER_TESTS=required`.
pub fn axe_source() -> Option<String> {
    static SOURCE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let source = SOURCE
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("axe");
            let script = dir.join("node_modules/axe-core/axe.min.js");
            let installed = dir.join(format!("node_modules/.{AXE_CORE}"));
            if !installed.is_file() {
                let done = std::process::Command::new("npm")
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--prefix",
                    ])
                    .arg(&dir)
                    .arg(AXE_CORE)
                    .status()
                    .is_ok_and(|status| status.success());
                if !done {
                    return None;
                }
                std::fs::write(&installed, "").ok()?;
            }
            std::fs::read_to_string(&script).ok()
        })
        .clone();
    if source.is_none() {
        assert!(
            std::env::var("SKEIN_BROWSER_TESTS").as_deref() != Ok("required"),
            "SKEIN_BROWSER_TESTS=required but npm could not install {AXE_CORE}"
        );
        eprintln!("npm could not install {AXE_CORE} (Node.js with npm is needed): skipping");
    }
    source
}

impl Page<'_> {
    /// What axe-core finds wrong with the page as it is now, at the `serious` and `critical`
    /// levels: one `{id, impact, help, nodes}` each.
    pub async fn accessibility_violations(&self) -> Vec<Value> {
        self.eval(&axe_source().expect("the test checked that axe-core is installed"))
            .await;
        let found = self
            .eval(
                "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations \
                 .filter(v => v.impact === 'serious' || v.impact === 'critical') \
                 .map(v => ({id: v.id, impact: v.impact, help: v.help, \
                             nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))})))",
            )
            .await;
        serde_json::from_value(found).expect("axe answers a list")
    }
}
