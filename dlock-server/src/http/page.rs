//! The status page: plain HTML, CSS and JS compiled into the binary (no build step). The
//! script polls the JSON API about once a second and builds the page with DOM calls
//! (`textContent`, never `innerHTML`), so names, which clients choose, are always text. A
//! content security policy allows only the page's own script and style as a second line.

use axum::http::header;
use axum::response::IntoResponse;

/// Allows only this origin's script and style, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `/`.
pub(super) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("page/index.html"),
    )
}

/// `/status.js`.
pub(super) async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("page/status.js"),
    )
}

/// `/status.css`.
pub(super) async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        include_str!("page/status.css"),
    )
}
