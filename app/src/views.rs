//! Templates (minijinja, HTML auto-escaped) and the stylesheet, compiled into the binary.

use axum::http::StatusCode;
use axum::response::Html;
use minijinja::{context, Environment};
use serde::Serialize;

/// The one stylesheet, served at `/assets/app.css?v=<version>`.
pub const APP_CSS: &str = include_str!("../static/app.css");

/// The stylesheet's version in its URL: its content's digest, so a cached copy is never stale.
pub fn css_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| datahub_core::password::sha256_hex(APP_CSS.as_bytes())[..12].to_string())
}

pub struct Views {
    env: Environment<'static>,
}

impl Default for Views {
    fn default() -> Self {
        Views::new()
    }
}

impl Views {
    pub fn new() -> Views {
        let mut env = Environment::new();
        env.add_global("css_version", css_version());
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("login.html", include_str!("../templates/login.html")),
            ("overview.html", include_str!("../templates/overview.html")),
            ("provider.html", include_str!("../templates/provider.html")),
            ("error.html", include_str!("../templates/error.html")),
        ] {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template `{name}` does not compile: {e}"));
        }
        Views { env }
    }

    pub fn render<S: Serialize>(&self, name: &str, data: S) -> anyhow::Result<Html<String>> {
        let template = self.env.get_template(name)?;
        Ok(Html(template.render(data)?))
    }
}

/// Error pages render without the state (they may come from an extractor).
pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    static VIEWS: std::sync::OnceLock<Views> = std::sync::OnceLock::new();
    let views = VIEWS.get_or_init(Views::new);
    views
        .render(
            "error.html",
            context! { status => status.as_u16(), reason => status.canonical_reason().unwrap_or(""), message },
        )
        .unwrap_or_else(|_| Html(format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))))
}
