//! The dashboard's pages: one HTML shell and its script, style and plot,
//! built into the binary (`include_str!`), so `backstop serve --http`
//! needs no Node build and no CDN, and the page works offline. The script
//! picks the view from the path and fetches `/api/v1/...`; it builds every
//! element with `textContent` and `createElement`, never `innerHTML`, so a
//! package or step name holding markup stays text.

use backstop_common::http::Reply;

const SHELL: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const PLOT: &str = include_str!("assets/plot.js");
const STYLE: &str = include_str!("assets/style.css");

/// The shell for a page's path (the script renders the view), else 404.
pub fn page(path: &str) -> Reply {
    let id = path.strip_prefix("/deployments/");
    if matches!(path, "/" | "/hosts" | "/models") || id.is_some_and(|i| !i.is_empty()) {
        return Reply::ok("text/html; charset=utf-8", SHELL);
    }
    Reply::text(404, "not found\n")
}

/// An asset by its path under `/assets/`.
pub fn asset(path: &str) -> Reply {
    match path {
        "/assets/app.js" => Reply::ok("text/javascript; charset=utf-8", APP),
        "/assets/plot.js" => Reply::ok("text/javascript; charset=utf-8", PLOT),
        "/assets/style.css" => Reply::ok("text/css; charset=utf-8", STYLE),
        _ => Reply::text(404, "no such asset\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_has_no_inline_script_and_no_remote_asset() {
        let lower = SHELL.to_lowercase();
        for tag in lower.split("<script").skip(1) {
            let (open, rest) = tag.split_once('>').unwrap();
            assert!(open.contains("src=\"/assets/"), "script without src: {tag}");
            assert!(rest.starts_with("</script>"), "inline script: {tag}");
        }
        assert!(!lower.contains("http://") && !lower.contains("https://"));
        for handler in [" onclick=", " onload=", " onerror="] {
            assert!(!lower.contains(handler), "inline handler {handler}");
        }
    }

    #[test]
    fn the_script_never_parses_html() {
        for (name, js) in [("app.js", APP), ("plot.js", PLOT)] {
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!js.contains(bad), "{name} uses {bad}");
            }
        }
    }
}
