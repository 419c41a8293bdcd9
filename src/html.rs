//! Extraction of structured data from HTML pages, with `tl`.
//!
//! Extraction never fails: malformed HTML yields whatever `tl` could make of
//! it, and text is always entity-decoded with whitespace collapsed.

use serde::{Deserialize, Serialize};

/// What is extracted from every page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    /// The `<title>` text.
    pub title: Option<String>,
    /// `<meta name="description" content="...">`.
    pub description: Option<String>,
    /// The texts of the `<h1>` elements, in document order.
    pub h1: Vec<String>,
}

/// Extracts [`Extracted`] from an HTML document.
pub fn extract(html: &str) -> Extracted {
    let Ok(dom) = tl::parse(html, tl::ParserOptions::default()) else {
        // tl rejects only documents longer than u32::MAX bytes, far past any body limit.
        return Extracted::default();
    };
    let parser = dom.parser();
    let texts = |selector: &str| -> Vec<String> {
        dom.query_selector(selector)
            .into_iter()
            .flatten()
            .filter_map(|h| h.get(parser))
            .map(|node| clean_text(&node.inner_text(parser)))
            .collect()
    };
    let title = texts("title").into_iter().find(|t| !t.is_empty());
    let description = dom
        .query_selector("meta[name=description]")
        .into_iter()
        .flatten()
        .filter_map(|h| {
            h.get(parser)?
                .as_tag()?
                .attributes()
                .get("content")
                .flatten()
                .map(|v| clean_text(&v.as_utf8_str()))
        })
        .find(|t| !t.is_empty());
    let h1 = texts("h1").into_iter().filter(|t| !t.is_empty()).collect();
    Extracted {
        title,
        description,
        h1,
    }
}

/// Decodes character references and collapses runs of whitespace into one space.
pub fn clean_text(raw: &str) -> String {
    let decoded = html_escape::decode_html_entities(raw);
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_title_description_and_headings() {
        let page = r#"<html><head><title>
            Fish &amp; Chips  </title>
            <meta name="description" content="Best &quot;chips&quot; in town">
            </head><body><h1>Menu</h1><p>x</p><h1> Prices &#8364; </h1></body></html>"#;
        let got = extract(page);
        assert_eq!(got.title.as_deref(), Some("Fish & Chips"));
        assert_eq!(got.description.as_deref(), Some("Best \"chips\" in town"));
        assert_eq!(got.h1, vec!["Menu", "Prices €"]);
    }

    #[test]
    fn malformed_html_yields_what_it_can() {
        let got = extract("<title>Open <h1>never closed");
        assert!(got.description.is_none());
        assert_eq!(extract(""), Extracted::default());
        extract("<<<>>><title></title><meta name=description><h1></h1>&#xFFFFFFFF;");
    }
}
