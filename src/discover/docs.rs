//! Text of the documents a site links to: PDF through `lopdf`, and office
//! documents (docx, xlsx, pptx, odt, ods, odp) as a zip of XML parts read with
//! `zip` and `roxmltree`.
//!
//! A document is hostile until read: every decompressed byte counts against
//! `max_decompressed`. Before a PDF reaches lopdf (which inflates streams
//! without limit) each of its streams is inflated here with a cap, so a PDF
//! bomb is refused unread; lopdf then runs on its own thread under
//! `catch_unwind`, because its parser is known to panic on malformed files,
//! and with a time limit.

use std::io::Read;
use std::time::Duration;

/// What can be read from a document.
pub enum DocKind {
    Pdf,
    Office,
}

/// Guesses the kind from the content type and the URL's path.
pub fn doc_kind(content_type: &str, path: &str) -> Option<DocKind> {
    let ct = content_type.to_ascii_lowercase();
    let p = path.to_ascii_lowercase();
    if ct.contains("application/pdf") || p.ends_with(".pdf") {
        return Some(DocKind::Pdf);
    }
    let office_ct = ct.contains("officedocument") || ct.contains("opendocument");
    let office_ext = [".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp"]
        .iter()
        .any(|e| p.ends_with(e));
    (office_ct || office_ext).then_some(DocKind::Office)
}

/// Reads at most `cap` bytes from `r`; `Err` when there was more.
fn read_capped(r: impl Read, cap: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    if out.len() as u64 > cap {
        return Err(format!("decompresses to more than {cap} bytes"));
    }
    Ok(out)
}

/// Inflates every Flate stream of a PDF with a shared cap, to see that the
/// document stays within budget before the PDF library inflates it. The
/// scan is textual (`stream` … `endstream`, the filters named in the
/// dictionary just before), which is all the budget needs.
fn pdf_within_budget(bytes: &[u8], max_decompressed: u64) -> Result<(), String> {
    let mut used: u64 = 0;
    let mut pos = 0;
    while let Some(off) = find(&bytes[pos..], b"stream") {
        let kw = pos + off;
        pos = kw + 6;
        if kw >= 3 && &bytes[kw - 3..kw] == b"end" {
            continue;
        }
        let mut start = pos;
        if bytes.get(start) == Some(&b'\r') {
            start += 1;
        }
        if bytes.get(start) == Some(&b'\n') {
            start += 1;
        }
        let end = find(&bytes[start..], b"endstream")
            .map(|e| start + e)
            .unwrap_or(bytes.len());
        let dict_from = kw.saturating_sub(1024);
        let dict = &bytes[dict_from..kw];
        let dict = match rfind(dict, b"obj") {
            Some(o) => &dict[o..],
            None => dict,
        };
        let flates = count(dict, b"FlateDecode");
        if count(dict, b"LZWDecode") > 0 {
            return Err("uses LZW compression, which is not read".into());
        }
        let mut data = bytes[start..end].to_vec();
        for _ in 0..flates {
            let left = max_decompressed.saturating_sub(used);
            data = read_capped(flate2::read::ZlibDecoder::new(&data[..]), left)
                .map_err(|e| format!("a stream {e} (the budget is {max_decompressed} bytes)"))?;
        }
        if flates > 0 {
            used += data.len() as u64;
        }
        pos = end.max(pos);
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The text of a PDF: what lopdf extracts from its pages, plus the literal
/// strings of its content streams (fonts without a usable encoding still
/// leave addresses readable there).
pub fn pdf_text(bytes: &[u8], max_decompressed: u64, time_limit: Duration) -> Result<String, String> {
    pdf_within_budget(bytes, max_decompressed)?;
    let owned = bytes.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pdf-text".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(move || {
                let doc = lopdf::Document::load_mem(&owned).map_err(|e| format!("not a readable PDF: {e}"))?;
                let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
                let mut text = doc.extract_text(&pages).unwrap_or_default();
                for (_, obj) in doc.objects.iter() {
                    if let Ok(stream) = obj.as_stream() {
                        let content = stream.decompressed_content().unwrap_or_else(|_| stream.content.clone());
                        text.push('\n');
                        text.push_str(&literal_strings(&content));
                    }
                }
                Ok::<String, String>(text)
            });
            let _ = tx.send(result.unwrap_or_else(|_| Err("the PDF library gave up on this file (panic)".into())));
        })
        .map_err(|e| format!("cannot start the PDF reader: {e}"))?;
    rx.recv_timeout(time_limit)
        .map_err(|_| format!("not read within {}s", time_limit.as_secs()))?
}

/// The `( … )` literal strings of a PDF content stream, escapes undone.
fn literal_strings(content: &[u8]) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut cur = Vec::new();
    while i < content.len() {
        let b = content[i];
        match b {
            b'\\' if depth > 0 => {
                if let Some(&n) = content.get(i + 1) {
                    cur.push(match n {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                i += 1;
            }
            b'(' => {
                if depth > 0 {
                    cur.push(b);
                }
                depth += 1;
            }
            b')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push_str(&String::from_utf8_lossy(&cur));
                    out.push(' ');
                    cur.clear();
                } else {
                    cur.push(b);
                }
            }
            _ if depth > 0 => cur.push(b),
            _ => {}
        }
        i += 1;
    }
    out
}

/// The text of an office document: the XML parts that hold its words,
/// each read with a cap that the whole document shares.
pub fn office_text(bytes: &[u8], max_decompressed: u64) -> Result<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a readable zip: {e}"))?;
    if zip.len() > 10_000 {
        return Err(format!("{} parts: too many to be a document", zip.len()));
    }
    let mut used: u64 = 0;
    let mut text = String::new();
    for i in 0..zip.len() {
        let mut part = match zip.by_index(i) {
            Ok(p) => p,
            Err(_) => continue,
        };
        let name = part.name().to_string();
        let wanted = name == "word/document.xml"
            || name == "content.xml"
            || name == "xl/sharedStrings.xml"
            || (name.starts_with("word/")
                && (name.contains("header") || name.contains("footer"))
                && name.ends_with(".xml"))
            || (name.starts_with("ppt/slides/") && name.ends_with(".xml"));
        if !wanted {
            continue;
        }
        let left = max_decompressed.saturating_sub(used);
        let data =
            read_capped(&mut part, left).map_err(|e| format!("{name} {e} (the budget is {max_decompressed} bytes)"))?;
        used += data.len() as u64;
        let xml = String::from_utf8_lossy(&data);
        let Ok(doc) = roxmltree::Document::parse(&xml) else {
            continue;
        };
        for node in doc.descendants() {
            if node.is_element() {
                // Paragraphs, breaks and cells separate words; runs inside a paragraph do not.
                if matches!(node.tag_name().name(), "p" | "br" | "tab" | "h" | "tc" | "si" | "cr") {
                    text.push(' ');
                }
            } else if let Some(t) = node.text().filter(|_| node.is_text()) {
                text.push_str(t);
            }
        }
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_strings_are_read() {
        assert_eq!(
            literal_strings(b"BT (Skriv til ) Tj [(sikker\\(e\\)post@x.dk)] TJ ET"),
            "Skriv til  sikker(e)post@x.dk "
        );
    }

    #[test]
    fn a_flate_bomb_is_refused_unread() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
        let data = z.finish().unwrap();
        let mut pdf = b"%PDF-1.4\n1 0 obj\n<< /Length 9 /Filter /FlateDecode >>\nstream\n".to_vec();
        pdf.extend_from_slice(&data);
        pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        let err = pdf_text(&pdf, 8 << 20, Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        assert!(pdf_text(b"%PDF-1.4 garbage", 8 << 20, Duration::from_secs(10)).is_err());
        assert!(office_text(b"PK\x03\x04 garbage", 8 << 20).is_err());
    }
}
