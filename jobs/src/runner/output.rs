//! Bounded capture of a job's output.
//!
//! A job may print gigabytes; a run record must not. [`BoundedOutput`] keeps the first
//! bytes (where a job usually says what it is doing) and the last bytes (where it says
//! why it stopped), counts everything in between and drops it. Memory use is bounded by
//! the budget no matter how much the job writes.

use std::collections::VecDeque;

/// Default total budget of a [`BoundedOutput`]: 64 KiB, split into 32 KiB of head and
/// 32 KiB of tail.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// A byte stream reduced to its head and its tail.
///
/// The first `head_limit` bytes pushed are kept verbatim; after that the last
/// `tail_limit` bytes are kept in a ring buffer. Everything else is only counted.
#[derive(Debug, Clone)]
pub struct BoundedOutput {
    /// The first bytes of the stream, never longer than `head_limit`.
    head: Vec<u8>,
    head_limit: usize,
    /// The most recent bytes after the head, never longer than `tail_limit`.
    tail: VecDeque<u8>,
    tail_limit: usize,
    /// Every byte ever pushed, so the cut can be reported exactly.
    total: u64,
}

impl Default for BoundedOutput {
    /// A buffer with the [`DEFAULT_OUTPUT_LIMIT`] budget.
    fn default() -> Self {
        Self::new(DEFAULT_OUTPUT_LIMIT)
    }
}

impl BoundedOutput {
    /// A buffer keeping at most `limit` bytes: the first half of the budget as head, the
    /// rest as tail.
    pub fn new(limit: usize) -> Self {
        let head_limit = limit / 2;
        Self::with_split(head_limit, limit - head_limit)
    }

    /// A buffer with an explicit split, e.g. `with_split(0, n)` to keep only the last `n`
    /// bytes.
    pub fn with_split(head_limit: usize, tail_limit: usize) -> Self {
        Self {
            head: Vec::new(),
            head_limit,
            tail: VecDeque::new(),
            tail_limit,
            total: 0,
        }
    }

    /// Appends a chunk of the stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;

        let head_room = self.head_limit - self.head.len();
        if head_room > 0 {
            let taken = head_room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
        }
        if bytes.is_empty() || self.tail_limit == 0 {
            return;
        }
        if bytes.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_limit..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    /// Number of bytes pushed so far, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Number of bytes that were dropped between head and tail.
    pub fn omitted_bytes(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    /// Whether nothing has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The kept bytes as text (invalid UTF-8 replaced by U+FFFD). When bytes were dropped
    /// a line `[… N bytes omitted …]` stands where they were.
    ///
    /// A multi-byte character cut in half at either side of the marker shows up as U+FFFD.
    pub fn render(&self) -> String {
        let (front, back) = self.tail.as_slices();
        let omitted = self.omitted_bytes();
        if omitted == 0 {
            let mut bytes = Vec::with_capacity(self.head.len() + self.tail.len());
            bytes.extend_from_slice(&self.head);
            bytes.extend_from_slice(front);
            bytes.extend_from_slice(back);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        text.push_str(&format!("\n[… {omitted} bytes omitted …]\n"));
        text.push_str(&String::from_utf8_lossy(
            &self.tail.iter().copied().collect::<Vec<u8>>(),
        ));
        text
    }

    /// The last `n` bytes of the stream as text (lossy UTF-8).
    ///
    /// Only contiguous bytes are returned: once bytes have been dropped, at most the tail
    /// buffer is available, so the result may be shorter than `n`. A character cut at the
    /// start shows up as U+FFFD.
    pub fn tail(&self, n: usize) -> String {
        let contiguous: Vec<u8> = if self.omitted_bytes() == 0 {
            self.head.iter().chain(self.tail.iter()).copied().collect()
        } else {
            self.tail.iter().copied().collect()
        };
        let start = contiguous.len().saturating_sub(n);
        String::from_utf8_lossy(&contiguous[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes of a repeating, position-dependent pattern, so a wrong cut shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| b'a' + (i % 26) as u8).collect()
    }

    #[test]
    fn output_under_the_limit_is_kept_whole() {
        let mut out = BoundedOutput::new(100);
        out.push(b"hello ");
        out.push(b"world");
        assert_eq!(out.render(), "hello world");
        assert_eq!(out.total_bytes(), 11);
        assert_eq!(out.omitted_bytes(), 0);
        assert_eq!(out.tail(5), "world");
        assert_eq!(out.tail(1000), "hello world");
    }

    #[test]
    fn output_exactly_at_the_limit_has_no_marker() {
        let data = pattern(100);
        let mut out = BoundedOutput::new(100);
        out.push(&data);
        assert_eq!(out.render().as_bytes(), &data[..]);
        assert_eq!(out.omitted_bytes(), 0);
    }

    #[test]
    fn output_over_the_limit_keeps_exact_head_and_tail_and_counts_the_cut() {
        let data = pattern(10_000);
        for chunk_size in [1, 7, 64, 333, 10_000] {
            let mut out = BoundedOutput::new(100);
            for chunk in data.chunks(chunk_size) {
                out.push(chunk);
            }
            let head = std::str::from_utf8(&data[..50]).unwrap();
            let tail = std::str::from_utf8(&data[data.len() - 50..]).unwrap();
            let expected = format!("{head}\n[… 9900 bytes omitted …]\n{tail}");
            assert_eq!(out.render(), expected, "chunk size {chunk_size}");
            assert_eq!(out.total_bytes(), 10_000);
            assert_eq!(out.omitted_bytes(), 9_900);
            assert_eq!(
                out.tail(10),
                std::str::from_utf8(&data[data.len() - 10..]).unwrap()
            );
            assert_eq!(out.tail(1000), tail, "tail is limited to the contiguous bytes");
        }
    }

    #[test]
    fn odd_limit_gives_the_extra_byte_to_the_tail() {
        let mut out = BoundedOutput::new(5);
        out.push(b"0123456789");
        assert_eq!(out.render(), "01\n[… 5 bytes omitted …]\n789");
    }

    #[test]
    fn tail_only_buffer_keeps_the_last_bytes() {
        let mut out = BoundedOutput::with_split(0, 4);
        out.push(b"abc");
        assert_eq!(out.tail(4), "abc");
        out.push(b"defgh");
        assert_eq!(out.tail(4), "efgh");
        assert_eq!(out.tail(2), "gh");
        assert_eq!(out.omitted_bytes(), 4);
    }

    #[test]
    fn zero_budget_only_counts() {
        let mut out = BoundedOutput::new(0);
        out.push(b"abc");
        assert_eq!(out.render(), "\n[… 3 bytes omitted …]\n");
        assert_eq!(out.tail(10), "");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let mut out = BoundedOutput::default();
        out.push(&[b'o', b'k', 0xff, b'!']);
        assert_eq!(out.render(), "ok\u{fffd}!");
    }
}
