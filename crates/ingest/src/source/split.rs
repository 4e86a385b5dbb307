//! Where to cut a CSV file so that several cores can parse it, each from a record boundary.
//!
//! A newline is a record boundary only outside quotes, and whether a byte is inside quotes
//! depends on everything before it, so guessing from the bytes near a cut point can be wrong.
//! Instead one pass over the file runs the quote state machine of the `csv` crate (csv-core's
//! reader with its defaults: any of `\r`, `\n`, `\r\n` ends a record, `""` is a quote inside
//! quotes, a quote opens quotes only at the start of a field) and records, for each cut, the
//! first record boundary at or after it and how many `\n` come before it, which is what the
//! piece's reader needs for line numbers. The pass is cheap next to parsing: stretches of the
//! file without any quote byte skip the state machine and only count newlines.

/// A part of a file that starts at a record boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Byte offset of the piece's first byte.
    pub start: u64,
    /// Byte offset just past its last byte.
    pub end: u64,
    /// The file's 1-based line number at `start`.
    pub first_line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records (blank lines are skipped here).
    Record,
    /// At the start of a field.
    Field,
    /// Inside an unquoted field.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: it either closes the quotes or, doubled,
    /// stands for one quote.
    QuoteInQuoted,
}

/// Finds record boundaries near target offsets while it is fed a file's bytes in order.
#[derive(Debug)]
pub struct Splitter {
    delimiter: u8,
    quote: u8,
    /// Records before the first place a piece may start (the header and lines above it).
    header_records: usize,
    records: usize,
    state: State,
    /// Offset of the next byte fed.
    offset: u64,
    /// `\n` bytes fed so far.
    newlines: u64,
    /// Cut points still to place, ascending.
    targets: std::collections::VecDeque<u64>,
    /// (offset, line) of each boundary found.
    found: Vec<(u64, u64)>,
}

impl Splitter {
    /// A splitter for a file of `size` bytes into at most `pieces` pieces of about equal size.
    pub fn new(delimiter: u8, quote: u8, header_records: usize, size: u64, pieces: u64) -> Self {
        let targets = (1..pieces.max(1)).map(|i| size * i / pieces).collect();
        Splitter {
            delimiter,
            quote,
            header_records,
            records: 0,
            state: State::Record,
            offset: 0,
            newlines: 0,
            targets,
            found: Vec::new(),
        }
    }

    /// Whether every cut point has been placed (the rest of the file need not be read).
    pub fn done(&self) -> bool {
        self.targets.is_empty()
    }

    /// Feeds the next bytes of the file.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.can_skip(chunk) {
            self.feed_unquoted(chunk);
        } else {
            for &b in chunk {
                self.step(b);
            }
        }
    }

    /// The pieces of a file of `size` bytes, in order; together they cover it.
    pub fn pieces(&self, size: u64) -> Vec<Piece> {
        let mut pieces = Vec::with_capacity(self.found.len() + 1);
        let (mut start, mut first_line) = (0, 1);
        for &(offset, line) in &self.found {
            if offset > start && offset < size {
                pieces.push(Piece {
                    start,
                    end: offset,
                    first_line,
                });
                (start, first_line) = (offset, line);
            }
        }
        pieces.push(Piece {
            start,
            end: size,
            first_line,
        });
        pieces
    }

    /// A chunk without quote bytes, entered outside quotes and past the header, cannot change
    /// the quote state: every `\n` in it ends a record.
    fn can_skip(&self, chunk: &[u8]) -> bool {
        !matches!(self.state, State::Quoted | State::QuoteInQuoted)
            && self.records >= self.header_records
            && memchr::memchr(self.quote, chunk).is_none()
    }

    fn feed_unquoted(&mut self, chunk: &[u8]) {
        let end = self.offset + chunk.len() as u64;
        let mut counted = 0; // bytes of `chunk` whose newlines are in `self.newlines`
        while let Some(&target) = self.targets.front() {
            // The first boundary at or after `target` follows a `\n` at or after `target - 1`.
            let from = target.saturating_sub(1).max(self.offset);
            if from >= end {
                break;
            }
            let from = (from - self.offset) as usize;
            let Some(at) = memchr::memchr(b'\n', &chunk[from..]).map(|i| from + i) else {
                break;
            };
            self.newlines += count_newlines(&chunk[counted..=at]) as u64;
            counted = at + 1;
            self.found
                .push((self.offset + at as u64 + 1, self.newlines + 1));
            while self
                .targets
                .front()
                .is_some_and(|&t| t <= self.offset + at as u64 + 1)
            {
                self.targets.pop_front();
            }
        }
        self.newlines += count_newlines(&chunk[counted..]) as u64;
        // The state after the chunk is decided by what follows its last record terminator.
        match memchr::memrchr2(b'\n', b'\r', chunk) {
            Some(last) => {
                self.state = State::Record;
                for &b in &chunk[last + 1..] {
                    self.state = self.next(self.state, b);
                }
            }
            None => {
                for &b in chunk {
                    self.state = self.next(self.state, b);
                }
            }
        }
        self.offset = end;
    }

    fn step(&mut self, b: u8) {
        let before = self.state;
        self.state = self.next(before, b);
        self.offset += 1;
        if before == State::Record && self.state != State::Record {
            self.records += 1;
        }
        if b == b'\n' {
            self.newlines += 1;
            if self.state == State::Record
                && self.records >= self.header_records
                && self.targets.front().is_some_and(|&t| t <= self.offset)
            {
                self.found.push((self.offset, self.newlines + 1));
                while self.targets.front().is_some_and(|&t| t <= self.offset) {
                    self.targets.pop_front();
                }
            }
        }
    }

    fn next(&self, state: State, b: u8) -> State {
        let terminator = b == b'\n' || b == b'\r';
        match state {
            State::Record if terminator => State::Record,
            State::Quoted if b == self.quote => State::QuoteInQuoted,
            State::Quoted => State::Quoted,
            // A quote opens quotes at the start of a field; right after a quote inside quotes
            // it is the second of a doubled quote. Elsewhere it is a plain character.
            State::Record | State::Field | State::QuoteInQuoted if b == self.quote => State::Quoted,
            _ if b == self.delimiter => State::Field,
            _ if terminator => State::Record,
            _ => State::Unquoted,
        }
    }
}

fn count_newlines(bytes: &[u8]) -> usize {
    // A plain byte comparison loop that the compiler vectorizes.
    bytes.iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `text` into up to `pieces` pieces, feeding it in chunks of `chunk` bytes.
    fn split(text: &[u8], pieces: u64, chunk: usize, header: usize) -> Vec<Piece> {
        let mut s = Splitter::new(b',', b'"', header, text.len() as u64, pieces);
        for c in text.chunks(chunk) {
            s.feed(c);
        }
        s.pieces(text.len() as u64)
    }

    /// Parses each piece on its own with the csv crate: (line, fields) of every record.
    fn records(text: &[u8], pieces: &[Piece], header: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        for p in pieces {
            let bytes = &text[p.start as usize..p.end as usize];
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes);
            let mut record = csv::ByteRecord::new();
            let mut skip = if p.start == 0 { header } else { 0 };
            loop {
                let start = r.position().clone();
                if !r.read_byte_record(&mut record).unwrap() {
                    break;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                // As the reader counts lines: blank lines before a record are its own.
                let raw = &bytes[start.byte() as usize..r.position().byte() as usize];
                let line =
                    start.line() + crate::source::csv::skip_blank_lines(raw).0 + p.first_line - 1;
                out.push((line, record.iter().map(<[u8]>::to_vec).collect()));
            }
        }
        out
    }

    #[test]
    fn pieces_parse_to_the_same_records_as_the_whole_file() {
        let texts: [&[u8]; 6] = [
            b"id,name\n1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n7,g\n8,h\n",
            // Newlines, delimiters and doubled quotes inside quotes.
            b"id,note\n1,\"a\nb\"\n2,\"x,\"\"y\"\"\nz\"\n3,plain\n4,\"\n\n\n\"\n5,e\n6,\"f\"\n",
            // A quote inside an unquoted field is a plain character.
            b"id,note\n1,ab\"c\n2,d\n3,e\"\n4,f\n5,g\n",
            // CRLF, blank lines, no final newline.
            b"id,v\r\n1,a\r\n\r\n2,b\r\n3,\"c\r\nd\"\r\n\n4,e\r\n5,f",
            // A title line above the header.
            b"export of 2024\nid,v\n1,\"a\nb\"\n2,b\n3,c\n",
            // Text after a closing quote continues the field.
            b"id,v\n1,\"a\"b\n2,\"c\"\"\"\n3,\"\"\n4,x\n",
        ];
        for text in texts {
            let header = if text.starts_with(b"export") { 2 } else { 1 };
            let whole = records(text, &split(text, 1, 1 << 20, header), header);
            for pieces in 2..=8 {
                for chunk in [1, 3, 7, 1 << 20] {
                    let p = split(text, pieces, chunk, header);
                    assert_eq!(p.first().unwrap().start, 0);
                    assert_eq!(p.last().unwrap().end, text.len() as u64);
                    assert!(p.windows(2).all(|w| w[0].end == w[1].start));
                    assert_eq!(
                        records(text, &p, header),
                        whole,
                        "{} in {pieces} pieces, chunks of {chunk}: {p:?}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
    }

    #[test]
    fn cuts_land_after_newlines_outside_quotes() {
        let text = b"h\n\"1\n2\n3\"\n4\n";
        let p = split(text, 4, 1 << 20, 1);
        let starts: Vec<u64> = p.iter().map(|p| p.start).collect();
        assert_eq!(starts, [0, 10]);
        assert_eq!(p[1].first_line, 5);
    }

    #[test]
    fn no_cut_inside_the_header() {
        let text = b"a,b\n1,2\n";
        let p = split(text, 8, 1, 1);
        assert!(p.iter().all(|p| p.start == 0 || p.start >= 4), "{p:?}");
    }

    proptest::proptest! {
        /// Any bytes made of what CSV is made of (quotes, delimiters, LF and CRLF line ends,
        /// text, bytes that are not UTF-8): read in pieces, they give the records of the whole
        /// file, on the same lines, wherever the chunks end. (A lone CR, an old Mac line end,
        /// is left out: the csv crate ends a record there but counts no line, so a record's
        /// line number after one can differ between a whole read and a read in pieces.)
        #[test]
        fn prop_pieces_parse_to_the_records_of_the_whole_file(
            body in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"a"[..], b"1", b",", b"\"", b"\n", b"\r\n", b" ", b"\xff",
                ]),
                0..300,
            ),
            pieces in 2u64..9,
            chunk in 1usize..64,
        ) {
            let mut text = b"id,v\n".to_vec();
            text.extend(body.concat());
            let whole = records(&text, &split(&text, 1, 1 << 20, 1), 1);
            let p = split(&text, pieces, chunk, 1);
            proptest::prop_assert_eq!(p.first().unwrap().start, 0);
            proptest::prop_assert_eq!(p.last().unwrap().end, text.len() as u64);
            proptest::prop_assert!(p.windows(2).all(|w| w[0].end == w[1].start));
            proptest::prop_assert_eq!(records(&text, &p, 1), whole);
        }
    }
}
