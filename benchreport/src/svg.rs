//! The SVG writer both plots use: a document of elements, one per line, with a white
//! background. Element text is escaped; numbers are formatted by the caller with a fixed
//! number of decimals, so the same data always gives the same bytes (no timestamps, ids or
//! hash-order iteration).

use std::fmt::Write as _;

/// An SVG document under construction.
#[derive(Clone, Debug, Default)]
pub struct Svg {
    lines: Vec<String>,
}

impl Svg {
    /// A document with the given root attributes (after `xmlns`), e.g.
    /// `width="760" height="420" font-family="sans-serif"`, and a white background rect
    /// (`background` is its size attributes, e.g. `width="100%" height="100%"`).
    pub fn new(root_attrs: &str, background: &str) -> Self {
        Self {
            lines: vec![
                format!(r#"<svg xmlns="http://www.w3.org/2000/svg" {root_attrs}>"#),
                format!(r#"<rect {background} fill="white"/>"#),
            ],
        }
    }

    /// Appends one line of markup (an element or several on one line).
    pub fn push(&mut self, markup: impl Into<String>) {
        self.lines.push(markup.into());
    }

    /// The document: its lines and the closing tag, each ending in `\n`.
    pub fn finish(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        out.push_str("</svg>\n");
        out
    }
}

/// `<text ATTRS>CONTENT</text>` with `&`, `<` and `>` of the content escaped.
pub fn text(attrs: &str, content: &str) -> String {
    format!("<text {attrs}>{}</text>", escape(content))
}

/// `s` with the characters XML does not allow in text escaped.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_and_escaping() {
        let mut s = Svg::new(r#"width="10" height="5""#, r#"width="10" height="5""#);
        s.push(text(r#"x="1" y="2""#, "a < b & c"));
        assert_eq!(
            s.finish(),
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"5\">\n\
             <rect width=\"10\" height=\"5\" fill=\"white\"/>\n\
             <text x=\"1\" y=\"2\">a &lt; b &amp; c</text>\n</svg>\n"
        );
    }
}
