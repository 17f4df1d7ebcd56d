//! A byte-level scan of an HTTP/1.1 request head as it is read from the socket, for the two
//! framings the HTTP parser hides from the service: `Content-Length` together with
//! `Transfer-Encoding` (it drops the `Content-Length`) and `Content-Length` on more than one
//! line with one value (it folds them into one). Both are refused (RFC 9112 §6.1, §6.3:
//! a request that could be read two ways is how requests are smuggled past a proxy).
//!
//! The scan counts header lines whose name (the bytes before `:` at a line start, any case)
//! is `content-length`, and notes one named `transfer-encoding`. It skips the request line
//! (and empty lines before it, as the parser does) and stops at the blank line that ends the
//! head: body bytes are never looked at. A small state machine, fed read by read (a head may
//! arrive in any pieces), without allocation; each byte of a head is looked at once at most, and a line whose name
//! cannot be one of the two is skipped from its first differing byte by a search for its end.
//!
//! It only judges framing headers by name; what the values say is the parser's and the
//! conformance check's business. A head the parser refuses anyway may get a verdict that is
//! never used.

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

/// What the scan says about a whole head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At most one `Content-Length` line, and none if there is `Transfer-Encoding`.
    Clear,
    /// `Content-Length` with `Transfer-Encoding`, or `Content-Length` on two lines or more.
    Ambiguous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the request line, or in empty lines before it (`len` 0).
    RequestLine,
    /// In a header line's name, or at the start of a line (`len` 0).
    Name,
    /// In a header line's value.
    Value,
    /// Past the blank line: the head is over.
    Done,
}

/// The scan of one head (see the module doc).
#[derive(Debug, Clone)]
pub struct HeadScan {
    place: Place,
    /// Bytes of the current line so far (a `CR` before the first byte not counted), up to
    /// 255: longer names match neither.
    len: u8,
    /// The current line's name so far still spells the start of `content-length`, of
    /// `transfer-encoding`.
    cl: bool,
    te: bool,
    /// `Content-Length` lines so far (saturating), and whether a `Transfer-Encoding` was seen.
    lengths: u8,
    coding: bool,
}

impl Default for HeadScan {
    fn default() -> Self {
        Self::new()
    }
}

impl HeadScan {
    pub const fn new() -> Self {
        Self {
            place: Place::RequestLine,
            len: 0,
            cl: true,
            te: true,
            lengths: 0,
            coding: false,
        }
    }

    /// Looks at the next bytes of the head. Returns the verdict once, when these bytes hold
    /// the blank line that ends it; bytes after that (the body, a next request) are ignored,
    /// as is everything fed later.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Verdict> {
        let mut i = 0;
        while i < bytes.len() {
            match self.place {
                Place::Done => return None,
                Place::Value => match bytes[i..].iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        i += at + 1;
                        self.line_start(Place::Name);
                    }
                    None => return None,
                },
                // Empty lines before the request line are skipped a byte at a time; the line
                // itself in one search for its end.
                Place::RequestLine if self.len == 0 && matches!(bytes[i], b'\r' | b'\n') => {
                    i += 1;
                }
                Place::RequestLine => {
                    self.len = 1;
                    match bytes[i..].iter().position(|&b| b == b'\n') {
                        Some(at) => {
                            i += at + 1;
                            self.line_start(Place::Name);
                        }
                        None => return None,
                    }
                }
                Place::Name => {
                    let b = bytes[i];
                    i += 1;
                    match b {
                        b'\n' if self.len == 0 => {
                            self.place = Place::Done;
                            return Some(self.verdict());
                        }
                        // A line without a name: the parser refuses it; go on with the next.
                        b'\n' => self.line_start(Place::Name),
                        b'\r' if self.len == 0 => {}
                        b':' => {
                            let len = usize::from(self.len);
                            if self.cl && len == CONTENT_LENGTH.len() {
                                self.lengths = self.lengths.saturating_add(1);
                            }
                            if self.te && len == TRANSFER_ENCODING.len() {
                                self.coding = true;
                            }
                            self.place = Place::Value;
                        }
                        _ => {
                            let lower = b.to_ascii_lowercase();
                            let at = usize::from(self.len);
                            self.cl = self.cl && CONTENT_LENGTH.get(at) == Some(&lower);
                            self.te = self.te && TRANSFER_ENCODING.get(at) == Some(&lower);
                            self.len = self.len.saturating_add(1);
                            // A name that can be neither: the rest of its line is not looked
                            // at byte by byte (most lines leave at their first byte).
                            if !self.cl && !self.te {
                                self.place = Place::Value;
                            }
                        }
                    }
                }
            }
        }
        None
    }

    fn line_start(&mut self, place: Place) {
        self.place = place;
        self.len = 0;
        self.cl = true;
        self.te = true;
    }

    fn verdict(&self) -> Verdict {
        if self.lengths > 1 || (self.lengths > 0 && self.coding) {
            Verdict::Ambiguous
        } else {
            Verdict::Clear
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `head` in pieces of `step` bytes; the verdict and how many bytes were fed up to
    /// the piece that gave it.
    fn scan(head: &[u8], step: usize) -> Option<(Verdict, usize)> {
        let mut s = HeadScan::new();
        let mut fed = 0;
        for piece in head.chunks(step) {
            fed += piece.len();
            if let Some(v) = s.feed(piece) {
                // Fed once, never again.
                assert_eq!(s.feed(b"\r\n\r\n"), None);
                assert_eq!(
                    s.feed(b"Content-Length: 1\r\nContent-Length: 1\r\n\r\n"),
                    None
                );
                return Some((v, fed));
            }
        }
        None
    }

    /// The verdict on `head`, the same whatever pieces it is fed in.
    fn verdict(head: &str) -> Option<Verdict> {
        let whole = scan(head.as_bytes(), head.len().max(1)).map(|(v, _)| v);
        for step in 1..8 {
            let pieces = scan(head.as_bytes(), step).map(|(v, _)| v);
            assert_eq!(pieces, whole, "{head:?} in pieces of {step}");
        }
        whole
    }

    const START: &str = "POST /a HTTP/1.1\r\nHost: t\r\n";

    fn head(lines: &str) -> String {
        format!("{START}{lines}\r\n")
    }

    #[test]
    fn single_framings_are_clear() {
        use Verdict::Clear;
        assert_eq!(verdict(&head("")), Some(Clear));
        assert_eq!(verdict(&head("Content-Length: 5\r\n")), Some(Clear));
        assert_eq!(
            verdict(&head("Transfer-Encoding: chunked\r\n")),
            Some(Clear)
        );
        assert_eq!(
            verdict(&head(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
            )),
            Some(Clear)
        );
        // Names that only look alike.
        assert_eq!(
            verdict(&head(
                "Content-Length: 5\r\nContent-Lengths: 5\r\nX-Content-Length: 5\r\n\
                 Content-Lengt: 5\r\nContent-Location: /\r\nTransfer-Encodings: chunked\r\n\
                 Transfer-Encodin: chunked\r\nTE: trailers\r\n"
            )),
            Some(Clear)
        );
        // In a value, not a name.
        assert_eq!(
            verdict(&head(
                "Content-Length: 5\r\nX-A: content-length: 5\r\nX-B: transfer-encoding:\r\n"
            )),
            Some(Clear)
        );
    }

    #[test]
    fn repeated_length_or_length_with_coding_is_ambiguous() {
        use Verdict::Ambiguous;
        for lines in [
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "content-length: 5\r\nCONTENT-LENGTH: 6\r\n",
            "Content-Length: 5\r\nX-A: 1\r\nContent-Length: 5\r\n",
            "Content-Length:5\r\nContent-Length:\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "transfer-encoding: chunked\r\ncontent-length: 5\r\n",
            "TRANSFER-ENCODING: chunked\r\nContent-length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip\r\nContent-Length: 5, 5\r\n",
        ] {
            assert_eq!(verdict(&head(lines)), Some(Ambiguous), "{lines:?}");
        }
        // Bare line feeds end lines too.
        let bare = "POST /a HTTP/1.1\nHost: t\nContent-Length: 5\nContent-Length: 5\n\n";
        assert_eq!(verdict(bare), Some(Ambiguous));
    }

    #[test]
    fn request_line_and_leading_empty_lines_are_skipped() {
        // A request line that looks like a header line is not counted.
        let h = "content-length:5 / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(verdict(h), Some(Verdict::Clear));
        let h = "\r\n\r\nPOST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(verdict(h), Some(Verdict::Ambiguous));
        let h = "\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(verdict(h), Some(Verdict::Clear));
    }

    #[test]
    fn stops_at_the_blank_line() {
        let first = head("Content-Length: 19\r\n");
        let body = "Content-Length: 5\r\n";
        let bytes = format!("{first}{body}");
        for step in 1..bytes.len() {
            let (v, fed) = scan(bytes.as_bytes(), step).expect("a verdict");
            assert_eq!(v, Verdict::Clear);
            // The verdict comes with the piece holding the blank line's last byte.
            assert!(
                fed >= first.len() && fed < first.len() + step,
                "step {step}"
            );
        }
        // No blank line yet: no verdict.
        assert_eq!(verdict(START), None);
        assert_eq!(verdict(&format!("{START}Content-Length: 5\r\n")), None);
        assert_eq!(verdict("POST /a HTTP/1.1"), None);
        assert_eq!(verdict(""), None);
    }

    #[test]
    fn long_names_and_many_lines_do_not_overflow() {
        let long = format!("{}: 1\r\n", "x".repeat(1000));
        let many = "Content-Length: 5\r\n".repeat(300);
        assert_eq!(verdict(&head(&long)), Some(Verdict::Clear));
        assert_eq!(verdict(&head(&many)), Some(Verdict::Ambiguous));
        let long_cl = format!("{}content-length: 1\r\n", "x".repeat(256));
        assert_eq!(verdict(&head(&long_cl)), Some(Verdict::Clear));
    }
}
