//! Small pieces shared by the self-contained HTML pages the tool writes (`query --html`,
//! `eval --figure`): text escaping and PNG images embedded as data URIs.

use base64::Engine;

use crate::error::{AcfError, Result};

/// `text` safe inside HTML text and double-quoted attributes.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// PNG bytes of an RGB image.
pub fn png(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| AcfError::Serialize { what: "PNG image".into(), reason: e.to_string() })?;
    Ok(png)
}

/// A `data:` URI of PNG bytes, for an `<img src>` that needs no other file.
pub fn png_data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_images_are_embedded() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([255, 0, 0]));
        let uri = png_data_uri(&png(&img).unwrap());
        assert!(uri.starts_with("data:image/png;base64,iVBOR"), "{uri}");
    }
}
