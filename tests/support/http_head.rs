//! The request line and the two headers the loopback test servers (registry, forge) act
//! on, read from an HTTP/1.1 request.

use std::io::BufRead;

pub struct Head {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_length: usize,
}

/// Reads up to the blank line that ends the headers.
pub fn read(reader: &mut impl BufRead) -> std::io::Result<Head> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut head = Head { method, path, authorization: None, content_length: 0 };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            return Ok(head);
        }
        let (k, v) =
            h.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).unwrap_or_default();
        match k.as_str() {
            "authorization" => head.authorization = Some(v),
            "content-length" => head.content_length = v.parse().unwrap_or(0),
            _ => {}
        }
    }
}
