//! Request body decoding (`Content-Encoding`), with a hard limit on the decoded size.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// Decodes a request body according to its `Content-Encoding` header.
///
/// `None`, `identity` and the empty string leave the body as it is (borrowed); `gzip`
/// and `x-gzip` (any case) decompress it, concatenated gzip members included.
/// At most `limit + 1` bytes are ever decompressed, so a small gzip bomb cannot make us
/// allocate gigabytes: reading stops as soon as the body is known to be too large.
///
/// # Errors
///
/// [`Error::TooLarge`] when the (decoded) body is larger than `limit` bytes,
/// [`Error::BadGzip`] when a gzip body does not decode, and
/// [`Error::UnsupportedEncoding`] for any other encoding.
pub fn decode_body<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Cow<'a, [u8]>> {
    let encoding = content_encoding.map(str::trim).unwrap_or("");
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        if body.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        return Ok(Cow::Borrowed(body));
    }
    if !(encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip")) {
        return Err(Error::UnsupportedEncoding(encoding.to_owned()));
    }

    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    // Text compresses about 10:1; start there rather than at the limit, which may be large.
    let mut decoded = Vec::with_capacity(body.len().saturating_mul(10).min(limit));
    MultiGzDecoder::new(body)
        .take(cap)
        .read_to_end(&mut decoded)
        .map_err(Error::BadGzip)?;
    if decoded.len() > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(Cow::Owned(decoded))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn identity_is_borrowed() {
        for encoding in [None, Some("identity"), Some(""), Some(" IDENTITY ")] {
            let decoded = decode_body(b"m v=1", encoding, 100).unwrap();
            assert!(matches!(decoded, Cow::Borrowed(b"m v=1")), "{encoding:?}");
        }
    }

    #[test]
    fn identity_over_limit() {
        assert!(decode_body(b"12345", None, 5).is_ok());
        let err = decode_body(b"123456", None, 5).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 5 }), "{err:?}");
        assert_eq!(err.to_string(), "request body exceeds the limit of 5 bytes");
    }

    #[test]
    fn gzip_round_trip() {
        let body = b"meter,site=a power=1.5 1\nmeter,site=b power=2.5 2\n".repeat(100);
        let compressed = gzip(&body);
        for encoding in ["gzip", "GZIP", "x-gzip", " gzip "] {
            let decoded = decode_body(&compressed, Some(encoding), body.len()).unwrap();
            assert_eq!(&*decoded, &body[..], "{encoding}");
        }
    }

    #[test]
    fn gzip_concatenated_members() {
        let mut body = gzip(b"m v=1\n");
        body.extend(gzip(b"m v=2\n"));
        let decoded = decode_body(&body, Some("gzip"), 100).unwrap();
        assert_eq!(&*decoded, b"m v=1\nm v=2\n");
    }

    #[test]
    fn gzip_limit_applies_to_decoded_size() {
        let body = vec![b'x'; 1000];
        let compressed = gzip(&body);
        assert!(compressed.len() < 100);
        assert!(decode_body(&compressed, Some("gzip"), 1000).is_ok());
        let err = decode_body(&compressed, Some("gzip"), 999).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 999 }), "{err:?}");
    }

    #[test]
    fn gzip_bomb_is_stopped_early() {
        // 256 MiB of zeros compresses to about 250 KiB.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..256 {
            encoder.write_all(&chunk).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = decode_body(&bomb, Some("gzip"), 10 << 20).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit } if limit == 10 << 20),
            "{err:?}"
        );
    }

    #[test]
    fn bad_gzip() {
        let truncated = gzip(b"m v=1\n");
        for body in [&b"m v=1"[..], &b""[..], &truncated[..10]] {
            let err = decode_body(body, Some("gzip"), 1000).unwrap_err();
            assert!(matches!(err, Error::BadGzip(_)), "{body:?}: {err:?}");
            assert!(err.to_string().starts_with("invalid gzip body: "), "{err}");
        }
        // A corrupted payload (flipped byte in the deflate stream) fails the CRC or inflate.
        let mut corrupt = gzip(&b"meter power=1.5\n".repeat(50));
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        assert!(matches!(
            decode_body(&corrupt, Some("gzip"), 100_000),
            Err(Error::BadGzip(_))
        ));
    }

    #[test]
    fn unsupported_encoding_is_named() {
        for encoding in ["br", "deflate", "zstd", "gzip, br"] {
            let err = decode_body(b"x", Some(encoding), 100).unwrap_err();
            assert!(
                matches!(&err, Error::UnsupportedEncoding(e) if e == encoding),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&format!("\"{encoding}\"")),
                "{err}"
            );
        }
    }
}
