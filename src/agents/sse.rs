//! Server-sent events, split out of a body as its bytes arrive: how a model streams its
//! reply (the WHATWG `text/event-stream` format: `field: value` lines, an event ended by a
//! blank line, lines ended by `\n`, `\r\n` or `\r`).
//!
//! Read on the task that waits for the reply, with buffers kept from one event to the next,
//! rather than on a task and a channel of their own for every call (as `async-openai` reads
//! them): a piece of a reply is one wake-up of the collaboration's task, not two.

/// The events in a stream of bytes. Feed it what arrives, then take every event it has
/// whole; at the end of the stream, [`Events::end`] gives up a last event that had no
/// blank line after it.
#[derive(Debug)]
pub(crate) struct Events {
    /// Bytes received and not yet read as lines; the first `read` of them are read.
    pending: Vec<u8>,
    read: usize,
    /// A line ended with `\r` at the end of what had arrived: a `\n` that comes next is
    /// part of that line's end, not an empty line.
    after_cr: bool,
    /// Past the start of the stream, and the byte-order mark that may open it.
    began: bool,
    /// The event being read: its type and its data, the `data` lines joined by `\n`.
    kind: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last event was handed out: its buffers are cleared before anything else is
    /// read (kept until then, since the event borrows them).
    dispatched: bool,
    /// The most bytes an event (its unread line and its data so far) may hold.
    max: usize,
}

/// One event. `kind` is empty when it named none (a `message`, to a browser).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Event<'a> {
    pub(crate) kind: &'a [u8],
    pub(crate) data: &'a [u8],
}

/// An event, or the part of one received so far, holds more than the limit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event of the stream is larger than {0} bytes")]
pub(crate) struct TooLarge(pub(crate) usize);

impl Events {
    /// An empty reader that refuses events larger than `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            read: 0,
            after_cr: false,
            began: false,
            kind: Vec::new(),
            data: Vec::new(),
            has_data: false,
            dispatched: false,
            max,
        }
    }

    /// Takes in bytes as they arrived.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.forget_dispatched();
        self.pending.drain(..self.read);
        self.read = 0;
        self.pending.extend_from_slice(bytes);
    }

    /// Once [`Events::next`] has given every whole event: whether the event still being
    /// read (its data so far and its unfinished line) is past the limit. Checked then, not
    /// as bytes arrive, so that whole events that came with them are read first.
    pub(crate) fn check_size(&self) -> Result<(), TooLarge> {
        let unread = self.pending.len() - self.read;
        if unread + self.data.len() > self.max {
            return Err(TooLarge(self.max));
        }
        Ok(())
    }

    /// The next whole event, if one has arrived.
    pub(crate) fn next(&mut self) -> Option<Event<'_>> {
        self.forget_dispatched();
        loop {
            let line = self.line()?;
            if self.field(line) {
                return Some(self.dispatch());
            }
        }
    }

    /// After the last bytes: the event they end, if the stream stopped before the blank
    /// line that should have followed it. A reply whose last line lacks its ending is read
    /// rather than lost, as lenient readers do.
    pub(crate) fn end(&mut self) -> Option<Event<'_>> {
        self.forget_dispatched();
        self.skip_byte_order_mark();
        if self.read < self.pending.len() {
            let line = (self.read, self.pending.len());
            self.read = self.pending.len();
            self.field(line);
        }
        self.has_data.then(|| self.dispatch())
    }

    /// The bounds in `pending` of the next whole line, without its ending.
    fn line(&mut self) -> Option<(usize, usize)> {
        self.skip_byte_order_mark();
        if self.after_cr
            && let Some(&next) = self.pending.get(self.read)
        {
            if next == b'\n' {
                self.read += 1;
            }
            self.after_cr = false;
        }
        let rest = &self.pending[self.read..];
        let end = memchr::memchr2(b'\n', b'\r', rest)?;
        let start = self.read;
        self.after_cr = rest[end] == b'\r';
        self.read += end + 1;
        Some((start, start + end))
    }

    /// Passes over a UTF-8 byte-order mark at the very start, as the format allows.
    fn skip_byte_order_mark(&mut self) {
        const MARK: &[u8] = b"\xEF\xBB\xBF";
        if self.began {
            return;
        }
        let head = &self.pending[self.read..];
        if head.starts_with(MARK) {
            self.read += MARK.len();
            self.began = true;
        } else if !MARK.starts_with(head) {
            self.began = true;
        }
    }

    /// Reads one line into the event; `true` if it was the blank line that ends an event
    /// with data (one without data is dropped, as the format says).
    fn field(&mut self, (start, end): (usize, usize)) -> bool {
        let line = &self.pending[start..end];
        if line.is_empty() {
            if self.has_data {
                return true;
            }
            self.kind.clear();
            return false;
        }
        // A comment (`:` first), often sent to keep a connection open.
        if line[0] == b':' {
            return false;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            // `id` and `retry` are for a browser reconnecting; a reply is not resumed.
            _ => {}
        }
        false
    }

    /// The event read so far; the reader starts the next one once it is done with.
    fn dispatch(&mut self) -> Event<'_> {
        self.has_data = false;
        self.dispatched = true;
        Event {
            kind: &self.kind,
            data: &self.data,
        }
    }

    /// Clears the buffers of the event last handed out, keeping their room.
    fn forget_dispatched(&mut self) {
        if std::mem::take(&mut self.dispatched) {
            self.kind.clear();
            self.data.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event in `chunks`, fed one after another, as (kind, data) strings.
    fn events(chunks: &[&str]) -> Vec<(String, String)> {
        let mut reader = Events::new(1024);
        let mut out = Vec::new();
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        for chunk in chunks {
            reader.feed(chunk.as_bytes());
            while let Some(event) = reader.next() {
                out.push((text(event.kind), text(event.data)));
            }
            reader.check_size().unwrap();
        }
        if let Some(event) = reader.end() {
            out.push((text(event.kind), text(event.data)));
        }
        out
    }

    /// `stream` gives `expected` read whole, split in two at every place, and a byte at a
    /// time.
    fn read_alike_however_split(stream: &str, expected: &[(String, String)]) {
        assert_eq!(events(&[stream]), expected);
        for at in 0..=stream.len() {
            let halves = [&stream[..at], &stream[at..]];
            assert_eq!(events(&halves), expected, "split at {at}");
        }
        let bytes: Vec<String> = stream.chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(events(&bytes), expected, "a byte at a time");
    }

    fn data(values: &[&str]) -> Vec<(String, String)> {
        values
            .iter()
            .map(|value| (String::new(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn events_are_read_whatever_the_pieces_they_arrive_in() {
        let stream = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        read_alike_however_split(stream, &data(&["{\"a\":1}", "{\"b\":2}", "[DONE]"]));
    }

    #[test]
    fn every_line_ending_ends_a_line_wherever_the_pieces_break() {
        for ending in ["\n", "\r\n", "\r"] {
            let stream = format!("data: one{ending}{ending}data: two{ending}{ending}");
            assert_eq!(events(&[&stream]), data(&["one", "two"]), "{ending:?}");
        }
        // Split anywhere: a `\r` ending one piece and a `\n` opening the next are one
        // ending, and a blank line after them is still a blank line.
        let mixed = "data: one\r\n\ndata: two\r\r\ndata: three\n\r\ndata: four\r\n\r\n";
        read_alike_however_split(mixed, &data(&["one", "two", "three", "four"]));
    }

    #[test]
    fn fields_are_read_as_the_format_says() {
        let stream = ": a comment, to keep the line open\n\
                      event: keepalive\n\
                      data:\n\n\
                      data: first line\n\
                      data:second line\n\
                      id: 7\n\
                      retry: 100\n\n\
                      event: ignored, no data follows\n\n\
                      data:  two spaces, one kept\n\n";
        assert_eq!(
            events(&[stream]),
            [
                ("keepalive".to_owned(), String::new()),
                (String::new(), "first line\nsecond line".to_owned()),
                (String::new(), " two spaces, one kept".to_owned()),
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_passed_over_and_only_there() {
        let marked = "\u{feff}data: a\n\n";
        assert_eq!(events(&[marked]), data(&["a"]));
        // Split inside the mark: the same.
        let bytes = marked.as_bytes();
        let mut reader = Events::new(1024);
        reader.feed(&bytes[..1]);
        assert_eq!(reader.next(), None);
        reader.feed(&bytes[1..]);
        assert_eq!(reader.next().unwrap().data, b"a");
        // A stream of one unended line, the mark before it.
        assert_eq!(events(&["\u{feff}data: a"]), data(&["a"]));
        // Later in the stream it is part of a line, as any other character.
        assert_eq!(events(&["data: a\n\n\u{feff}data: b\n\n"]), data(&["a"]));
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_still_read() {
        assert_eq!(events(&["data: a\n\ndata: [DONE]"]), data(&["a", "[DONE]"]));
        assert_eq!(
            events(&["data: a\n\ndata: [DONE]\n"]),
            data(&["a", "[DONE]"])
        );
        assert_eq!(events(&["data: a\n\n"]), data(&["a"]));
    }

    #[test]
    fn an_event_past_the_limit_is_refused() {
        let mut reader = Events::new(24);
        reader.feed(b"data: 0123456789\n");
        // The first line is data now; more of the same event goes over.
        assert_eq!(reader.next(), None);
        assert_eq!(reader.check_size(), Ok(()));
        reader.feed(b"data: 0123456789");
        assert_eq!(reader.next(), None);
        assert_eq!(reader.check_size(), Err(TooLarge(24)));
        // A line that never ends goes over too.
        let mut reader = Events::new(24);
        reader.feed(b"data: 0123456789");
        reader.feed(b"0123456789");
        assert_eq!(reader.check_size(), Err(TooLarge(24)));
        // Events read and done with do not count against the next, even those that came
        // in the same piece as its beginning.
        let mut reader = Events::new(24);
        for _ in 0..100 {
            reader.feed(b"data: 0123456789\n\ndata: 01234");
            assert_eq!(reader.next().unwrap().data, b"0123456789");
            assert_eq!(reader.check_size(), Ok(()));
            reader.feed(b"56789\n\n");
            assert_eq!(reader.next().unwrap().data, b"0123456789");
            assert_eq!(reader.check_size(), Ok(()));
        }
    }
}
