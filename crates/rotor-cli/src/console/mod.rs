//! `rotor console`: the Management Utilities as a local web application.
//!
//! A small HTTP server on loopback renders one page per tab from the same session the command
//! line uses, and runs every action through the command line's own code: a fresh
//! [`Session`] per action, whose passwords and PINs come from the page ([`actions::PageSecrets`])
//! and whose progress lines go to the console's message window. The guard ([`guard`]) admits
//! only requests with the session token, on the console's own host, and state-changing ones
//! only from its own origin.

mod actions;
mod admins;
mod audit;
mod guard;
mod master_keys;
mod page;
mod thresholds;
mod units;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::args::ConsoleArgs;
use crate::session::Session;

/// The most lines the message window keeps.
const LOG_LINES: usize = 500;

/// The message window: the last lines, and how many came before them.
#[derive(Default)]
struct MessageLog {
    dropped: usize,
    lines: VecDeque<String>,
}

/// What every request shares.
pub(crate) struct Console {
    /// The session the command line would use; each action gets a fresh copy.
    base: Session,
    token: String,
    log: Mutex<MessageLog>,
    /// One action at a time: they read and write the same workstation files.
    busy: tokio::sync::Mutex<()>,
    /// A rotation runs in the background.
    rotating: AtomicBool,
    /// The secrets the last rotation run asked for and did not get.
    rotation_needs: Mutex<Vec<String>>,
}

impl Console {
    /// Adds a line to the message window.
    pub(crate) fn log(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.lines.push_back(line.to_owned());
            while log.lines.len() > LOG_LINES {
                log.lines.pop_front();
                log.dropped += 1;
            }
        }
    }

    /// How many lines the message window has had.
    fn log_length(&self) -> usize {
        self.log
            .lock()
            .map(|log| log.dropped + log.lines.len())
            .unwrap_or_default()
    }

    fn messages(&self) -> (usize, Vec<String>) {
        self.log
            .lock()
            .map(|log| (log.dropped, log.lines.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// A fresh session for one request.
    pub(crate) fn session(&self) -> Session {
        self.base.fresh()
    }
}

/// `rotor console`
pub async fn console(mut session: Session, args: ConsoleArgs) -> Result<()> {
    // The page asks before every destructive action; the command line's own prompts would
    // wait on a terminal nobody watches.
    session.yes = true;
    session.json = false;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut bytes = [0u8; 32];
    rotor_crypto::fill_random(&mut bytes);
    let token = hex::encode(bytes);
    let url = format!("http://{address}/units?token={token}");
    let console = Arc::new(Console {
        base: session,
        token: token.clone(),
        log: Mutex::default(),
        busy: tokio::sync::Mutex::new(()),
        rotating: AtomicBool::new(false),
        rotation_needs: Mutex::default(),
    });
    let app = router(console, guard::Guard::new(token, address));
    if let Some(path) = &args.url_file {
        rotor_util::fs::write_durable(path, format!("{url}\n").as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("rotor console: {url}");
    println!("Open it in a browser on this host; stop the console with Ctrl-C.");
    if !args.no_open {
        open_browser(&url);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the console's server failed")
}

/// Opens `url` in the desktop's browser, if there is one; the printed URL is enough otherwise.
fn open_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        eprintln!("No browser could be opened here; open the URL above.");
    }
}

fn router(console: Arc<Console>, guard: guard::Guard) -> axum::Router {
    axum::Router::new()
        .route("/", get(home))
        .route("/progress", get(progress))
        .route("/preview", post(preview))
        .route("/run", post(run))
        .route("/{tab}", get(tab))
        .with_state(console)
        .layer(axum::middleware::from_fn_with_state(guard, guard::enforce))
        // Action requests are small JSON objects.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
}

async fn home(State(console): State<Arc<Console>>) -> Redirect {
    Redirect::to(&format!("/units?token={}", console.token))
}

async fn tab(State(console): State<Arc<Console>>, Path(tab): Path<String>) -> Response {
    let session = console.session();
    let body = match tab.as_str() {
        "units" => units::render(&session).await,
        "admins" => admins::render(&session).await,
        "thresholds" => thresholds::render(&session).await,
        "master-keys" => master_keys::render(&console, &session).await,
        "key-storage" => master_keys::render_storage(&session).await,
        "audit" => audit::render(&session).await,
        _ => return (StatusCode::NOT_FOUND, "no such tab").into_response(),
    };
    let body = body.unwrap_or_else(|err| {
        format!(
            "<p class=\"error\" id=\"tab-error\">{}</p>",
            page::escape(&format!("{err:#}"))
        )
    });
    let (_, messages) = console.messages();
    Html(page::layout(&console.token, &tab, &body, &messages)).into_response()
}

/// The rotation's state for the page's progress bar, and the message window's new lines.
async fn progress(State(console): State<Arc<Console>>) -> Json<serde_json::Value> {
    let session = console.session();
    let journal = master_keys::rotation_of_selection(&session)
        .await
        .ok()
        .flatten();
    let (dropped, log) = console.messages();
    let journal = journal.map(|view| {
        json!({
            "phase": view.journal.phase.label(),
            "done": view.journal.done,
            "whole": (view.journal.done + view.remaining).max(view.journal.total),
            "rate": view.rate,
            "seconds_left": view.seconds_left,
            "waiting": view.journal.waiting,
        })
    });
    Json(json!({
        "running": console.rotating.load(Ordering::SeqCst),
        "journal": journal,
        "log_start": dropped,
        "log_length": dropped + log.len(),
        "log": log,
    }))
}

async fn preview(
    State(console): State<Arc<Console>>,
    Json(request): Json<actions::PreviewRequest>,
) -> Json<serde_json::Value> {
    let session = console.session();
    Json(
        match actions::preview(&console, &session, &request.action).await {
            Ok(preview) => json!(preview),
            Err(err) => json!({"error": format!("{err:#}")}),
        },
    )
}

async fn run(
    State(console): State<Arc<Console>>,
    Json(request): Json<actions::RunRequest>,
) -> Json<actions::RunReply> {
    Json(actions::run(&console, request).await)
}
