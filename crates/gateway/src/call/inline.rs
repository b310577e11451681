//! Images given by URL, for upstreams that take only inline bytes (Gemini, Ollama): fetched by
//! llmux, several at once, and put in the canonical request as base64 — or the client's 400
//! naming the URL and the reason. Never forwarded to fail upstream.

use super::Call;
use crate::image_fetch::{self, FetchLimits};
use llmux_config::UpstreamKind;
use llmux_wire::canonical::{ChatRequest, Image, Part, TranslateError};
use llmux_wire::Dialect;

/// Whether an upstream of `kind`, called in `dialect`, needs images as inline bytes: Gemini
/// (its `fileData` takes only files it hosts) and Ollama (native and `/v1` alike).
pub(super) fn takes_only_inline(kind: UpstreamKind, dialect: Dialect) -> bool {
    kind == UpstreamKind::Ollama || dialect == Dialect::Gemini
}

/// The http(s) image URLs of `req`, each once, in order.
pub(super) fn fetchable_urls(req: &ChatRequest) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for m in &req.messages {
        for p in &m.content {
            if let Part::Image(Image::Url(u)) = p {
                if image_fetch::is_fetchable(u) && !urls.contains(u) {
                    urls.push(u.clone());
                }
            }
        }
    }
    urls
}

impl Call {
    /// Replaces the http(s) image URLs of the decoded request with the fetched images. Done once
    /// per call: the next candidates find the request inlined.
    pub(super) async fn inline_images(&mut self) -> Result<(), TranslateError> {
        let Some(Ok(req)) = &self.canonical else {
            return Ok(());
        };
        let urls = fetchable_urls(req);
        if urls.is_empty() {
            return Ok(());
        }
        let config = &self.routes.config;
        let max_count = config.translation.image_fetch_max_count;
        if urls.len() > max_count {
            return Err(TranslateError::new(
                "",
                format!(
                    "the request gives {} images by URL and this upstream takes images only as \
                     inline data: llmux fetches at most {max_count} per request \
                     (translation.image_fetch_max_count); send them as base64 data",
                    urls.len()
                ),
            ));
        }
        let limits = FetchLimits {
            max_bytes: config.translation.image_fetch_max,
            timeout: config.translation.image_fetch_timeout,
            allow_private: config.admin.allow_private_upstreams,
        };
        let fetched =
            futures_util::future::join_all(urls.iter().map(|u| image_fetch::fetch(u, limits)))
                .await;
        let mut images = Vec::with_capacity(urls.len());
        for (url, got) in urls.into_iter().zip(fetched) {
            match got {
                Ok(f) => images.push((url, f)),
                Err(e) => {
                    return Err(TranslateError::new(
                        "",
                        format!(
                            "the image {url} could not be fetched (this upstream takes images \
                             only as inline data, so llmux fetches them): {e}"
                        ),
                    ))
                }
            }
        }
        if let Some(Ok(req)) = &mut self.canonical {
            replace_urls(req, &images);
        }
        Ok(())
    }
}

/// Every image part whose URL was fetched becomes its base64 data.
fn replace_urls(req: &mut ChatRequest, images: &[(String, image_fetch::Fetched)]) {
    for m in &mut req.messages {
        for p in &mut m.content {
            let Part::Image(img @ Image::Url(_)) = p else {
                continue;
            };
            let Image::Url(u) = &*img else { continue };
            if let Some((_, f)) = images.iter().find(|(url, _)| url == u) {
                *img = Image::Base64 {
                    media_type: f.media_type.clone(),
                    data: f.data.clone(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use llmux_wire::canonical::{Message, Role};

    #[test]
    fn urls_are_collected_once_and_replaced() {
        let url = |u: &str| Part::Image(Image::Url(u.into()));
        let mut req = ChatRequest {
            messages: vec![
                Message::new(
                    Role::User,
                    vec![url("https://a/x.png"), url("gs://b/y.png")],
                ),
                Message::new(
                    Role::User,
                    vec![url("https://a/x.png"), url("http://c/z.jpg")],
                ),
            ],
            ..ChatRequest::default()
        };
        let urls = fetchable_urls(&req);
        assert_eq!(urls, ["https://a/x.png", "http://c/z.jpg"]);
        let fetched = image_fetch::Fetched {
            media_type: "image/png".into(),
            data: "AAAA".into(),
        };
        replace_urls(&mut req, &[("https://a/x.png".into(), fetched)]);
        let inline = Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: "AAAA".into(),
        });
        assert_eq!(req.messages[0].content[0], inline);
        assert_eq!(req.messages[1].content[0], inline);
        assert_eq!(req.messages[0].content[1], url("gs://b/y.png"));
        assert_eq!(req.messages[1].content[1], url("http://c/z.jpg"));
        assert!(takes_only_inline(UpstreamKind::Ollama, Dialect::OpenAi));
        assert!(takes_only_inline(UpstreamKind::Gemini, Dialect::Gemini));
        assert!(!takes_only_inline(
            UpstreamKind::Anthropic,
            Dialect::Anthropic
        ));
    }
}
