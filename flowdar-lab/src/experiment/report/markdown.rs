//! The report's Markdown (headings, paragraphs, bold, inline code, lists,
//! tables and images: what `report.md` uses) as HTML for `report.html`.
use std::{collections::HashMap, fmt::Write as _};

/// A small Markdown-to-HTML for the report's headings, paragraphs, tables
/// and images; an image whose path is in `inline` is replaced by that
/// markup (the report's SVG figures, so that the page stands alone).
pub(super) fn to_html(md: &str, inline: &HashMap<String, String>) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let code = |s: &str| {
        let mut out = String::new();
        for (i, part) in esc(s).split('`').enumerate() {
            if i % 2 == 1 {
                let _ = write!(out, "<code>{part}</code>");
            } else {
                out.push_str(part);
            }
        }
        out
    };
    let mut html = String::from("<style>.report{padding:8px 16px;background:#fff}.report table{border-collapse:collapse;font-size:13px}.report td,.report th{border:1px solid #ccd;padding:3px 8px;text-align:right}.report td:nth-child(2){text-align:left}.report .figures{display:flex;flex-wrap:wrap;gap:12px 24px}.report figure{margin:0}</style>");
    let mut in_table = false;
    // Figures in a row (the variants' timelines side by side), wrapping
    // where the window is narrow; blank lines between them keep the row.
    let mut in_figures = false;
    for line in md.lines() {
        let is_image = image(line).is_some();
        if in_figures && !is_image && !line.trim().is_empty() {
            html.push_str("</div>");
            in_figures = false;
        }
        if line.starts_with('|') {
            if line.contains("---") {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                html.push_str("<table>");
                in_table = true;
            }
            html.push_str("<tr>");
            for c in cells {
                let _ = write!(html, "<{tag}>{}</{tag}>", code(c));
            }
            html.push_str("</tr>");
            continue;
        }
        if in_table {
            html.push_str("</table>");
            in_table = false;
        }
        if let Some((alt, path)) = image(line) {
            if !in_figures {
                html.push_str("<div class=\"figures\">");
                in_figures = true;
            }
            match inline.get(path) {
                Some(markup) => {
                    let _ = write!(html, "<figure>{markup}</figure>");
                }
                None => {
                    let _ = write!(html, "<img alt=\"{}\" src=\"{}\">", esc(alt), esc(path));
                }
            }
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = write!(html, "<h3>{}</h3>", code(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = write!(html, "<h2>{}</h2>", code(h));
        } else if let Some(item) = line.strip_prefix("- ") {
            let _ = write!(html, "<div>• {}</div>", code(item));
        } else if !line.trim().is_empty() {
            let p = code(line)
                .replacen("**", "<b>", 1)
                .replacen("**", "</b>", 1);
            let _ = write!(html, "<p>{p}</p>");
        }
    }
    if in_table {
        html.push_str("</table>");
    }
    if in_figures {
        html.push_str("</div>");
    }
    html
}

/// `![alt](path)` alone on its line.
fn image(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix("![")?;
    let (alt, rest) = rest.split_once("](")?;
    Some((alt, rest.strip_suffix(')')?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_bold_code_lists_and_tables() {
        let figures = HashMap::from([("a/t.svg".to_string(), "<svg/>".to_string())]);
        let html = to_html(
            "# T\n\n**Denial.** `ap_read_request` <held>\n\n- a\n\n| f | n |\n|---|---:|\n| `x` | 1 |\n\n![A](a/t.svg)\n\n![B](b.png)\n\nafter\n",
            &figures,
        );
        let body = html.split("</style>").nth(1).unwrap();
        assert_eq!(
            body,
            "<h2>T</h2><p><b>Denial.</b> <code>ap_read_request</code> &lt;held&gt;</p>\
             <div>• a</div><table><tr><th>f</th><th>n</th></tr>\
             <tr><td><code>x</code></td><td>1</td></tr></table>\
             <div class=\"figures\"><figure><svg/></figure><img alt=\"B\" src=\"b.png\"></div><p>after</p>"
        );
    }
}
