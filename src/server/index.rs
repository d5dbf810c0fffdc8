//! `GET /`: a small HTML page naming the server and its build, like OPA's banner page.

use axum::response::{Html, IntoResponse, Response};

use crate::build;

pub async fn get() -> Response {
    Html(format!(
        "<!DOCTYPE html>\n<html>\n<head><title>regent</title></head>\n<body>\n\
         <pre>\nregent {version}: a drop-in replacement for the Open Policy Agent server\n\n\
         Version: {version}\nBuild Commit: {commit}\nBuild Timestamp: {timestamp}\n\
         Build Hostname: {hostname}\n</pre>\n\
         <p>Query the <a href=\"/v1/data\">Data API</a>; scrape <a href=\"/metrics\">/metrics</a>; \
         probe <a href=\"/health\">/health</a>.</p>\n</body>\n</html>\n",
        version = build::VERSION,
        commit = build::COMMIT,
        timestamp = build::TIMESTAMP,
        hostname = build::HOSTNAME,
    ))
    .into_response()
}
