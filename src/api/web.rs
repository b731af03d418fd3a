//! The browser UI: the files of `web/`, compiled into the binary, so a server behind a
//! firewall serves the whole UI with nothing fetched at run time and nothing to build.
//!
//! `/` is the page; its scripts and stylesheet are under `/assets/`. The UI is plain HTML,
//! CSS and ES modules, so what is in `web/` is exactly what the browser runs. Responses
//! carry an `ETag` (a browser revalidates and gets a 304 while the binary is the same) and
//! the page a strict Content-Security-Policy: scripts and styles from this server only, no
//! inline code, connections to this server only, no framing.

use std::sync::LazyLock;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::AppError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $content_type:literal),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../web/", $name)),
        }),*]
    };
}

/// Every file of `web/`; a unit test checks that none is missing.
const ASSETS: &[Asset] = assets!(
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "ui.js" => "text/javascript; charset=utf-8",
    "stream.js" => "text/javascript; charset=utf-8",
    "collaborations.js" => "text/javascript; charset=utf-8",
    "channel.js" => "text/javascript; charset=utf-8",
    "agents.js" => "text/javascript; charset=utf-8",
    "teams.js" => "text/javascript; charset=utf-8",
    "events.js" => "text/javascript; charset=utf-8",
);

/// `connect-src 'self'` covers this server's own `ws:`/`wss:` URLs (CSP level 3).
/// `media-src blob:` plays a podcast the page fetched with its key (an `<audio>` element
/// cannot send an `Authorization` header).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// One strong validator per asset, computed on first use.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex is a header value")
        })
        .collect()
});

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return AppError::NotFound("file").into_response();
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    // Revalidate every time: cheap with the ETag, and an upgraded server is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.name == "index.html" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_web_is_served() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("web/ exists")
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served, "add new files in web/ to ASSETS");
    }
}
