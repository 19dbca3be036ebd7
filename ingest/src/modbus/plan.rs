//! Request planning: the address ranges a device needs, coalesced into as few read
//! requests as the protocol allows.
//!
//! A round trip costs far more than a few extra registers in the response, so ranges
//! close to each other are read together, across gaps of up to [`max_gap`]. A range is
//! never split over two requests unless it alone is larger than one request may read
//! (a SunSpec model over 125 registers): a value and its scale factor are read in one
//! request whenever they can be, so they always belong to the same instant.

use super::config::RegisterType;

/// Gap (in registers) a request may span to save another request: the 32 bytes it
/// adds to a response cost less than a round trip.
const REGISTER_GAP: u16 = 16;

/// Gap (in bits) for coils and discrete inputs: 16 bytes of response.
const BIT_GAP: u16 = 128;

/// The largest gap a request of `register` spans.
pub(crate) fn max_gap(register: RegisterType) -> u16 {
    if register.is_bit() {
        BIT_GAP
    } else {
        REGISTER_GAP
    }
}

/// One read: `count` registers (or bits) from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadRequest {
    pub(crate) register: RegisterType,
    pub(crate) start: u16,
    pub(crate) count: u16,
}

impl ReadRequest {
    /// One past the last address, as a `u32` (a request may end at 65536).
    pub(crate) fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Coalesces `spans` (start, length) of one register type into requests of at most
/// [`RegisterType::max_per_request`] each, joining spans at most `gap` apart when the
/// result still fits. Spans must end by 65536 and have a length of at least 1.
pub(crate) fn coalesce(
    register: RegisterType,
    spans: impl IntoIterator<Item = (u16, u16)>,
    gap: u16,
) -> Vec<ReadRequest> {
    let max = u32::from(register.max_per_request());
    // Oversized spans are cut into full requests first; the remainder may still join
    // its neighbour.
    let mut pieces: Vec<(u32, u32)> = Vec::new();
    for (start, len) in spans {
        let (mut start, end) = (u32::from(start), u32::from(start) + u32::from(len));
        while end - start > max {
            pieces.push((start, start + max));
            start += max;
        }
        if end > start {
            pieces.push((start, end));
        }
    }
    pieces.sort_unstable();
    let mut requests = Vec::new();
    let mut current: Option<(u32, u32)> = None;
    for (start, end) in pieces {
        current = match current {
            Some((s, e)) if start <= e + u32::from(gap) && end.max(e) - s <= max => {
                Some((s, e.max(end)))
            }
            Some((s, e)) => {
                requests.push(request(register, s, e));
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        requests.push(request(register, s, e));
    }
    requests
}

fn request(register: RegisterType, start: u32, end: u32) -> ReadRequest {
    ReadRequest {
        register,
        // Spans end by 65536 and requests are at most 2000 long, so both fit.
        start: start as u16,
        count: (end - start) as u16,
    }
}

/// What one request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// The responses of one cycle, by request.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    parts: Vec<(ReadRequest, Data)>,
}

impl Reads {
    pub(crate) fn push(&mut self, request: ReadRequest, data: Data) {
        self.parts.push((request, data));
    }

    /// `count` registers of `register` from `start`, gathered across the responses
    /// that hold them (a block split over several requests); `None` if some were not
    /// read.
    pub(crate) fn words(&self, register: RegisterType, start: u16, count: u16) -> Option<Vec<u16>> {
        let mut out = Vec::with_capacity(usize::from(count));
        let end = u32::from(start) + u32::from(count);
        let mut at = u32::from(start);
        while at < end {
            let (request, words) = self.parts.iter().find_map(|(r, d)| match d {
                Data::Words(w)
                    if r.register == register && u32::from(r.start) <= at && at < r.end() =>
                {
                    Some((r, w))
                }
                _ => None,
            })?;
            let from = (at - u32::from(request.start)) as usize;
            let to = (end.min(request.end()) - u32::from(request.start)) as usize;
            out.extend_from_slice(words.get(from..to)?);
            at = end.min(request.end());
        }
        Some(out)
    }

    /// The bit at `address`, if it was read.
    pub(crate) fn bit(&self, register: RegisterType, address: u16) -> Option<bool> {
        self.parts.iter().find_map(|(r, d)| match d {
            Data::Bits(b)
                if r.register == register && r.start <= address && u32::from(address) < r.end() =>
            {
                b.get(usize::from(address - r.start)).copied()
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(register: RegisterType, start: u16, count: u16) -> ReadRequest {
        ReadRequest {
            register,
            start,
            count,
        }
    }

    const H: RegisterType = RegisterType::Holding;

    #[test]
    fn adjacent_and_close_spans_share_a_request() {
        // 30775 (int32), 30777 (int32), then 30790 across a 11-register gap.
        let got = coalesce(H, [(30777, 2), (30775, 2), (30790, 1)], 16);
        assert_eq!(got, vec![req(H, 30775, 16)]);
        // Without gap merging, the distant span is its own request.
        let got = coalesce(H, [(30777, 2), (30775, 2), (30790, 1)], 0);
        assert_eq!(got, vec![req(H, 30775, 4), req(H, 30790, 1)]);
        // Overlapping points (one register read as two types) are read once.
        let got = coalesce(H, [(10, 2), (10, 1), (11, 1)], 0);
        assert_eq!(got, vec![req(H, 10, 2)]);
    }

    #[test]
    fn requests_hold_at_most_125_registers_and_never_split_a_point() {
        // 0..124 and a float at 124: the float would end at 126, so it starts anew.
        let got = coalesce(H, [(0, 124), (124, 2)], 16);
        assert_eq!(got, vec![req(H, 0, 124), req(H, 124, 2)]);
        // Points spread over 300 registers: every request at most 125, all covered.
        let spans: Vec<(u16, u16)> = (0..150).map(|i| (i * 2, 2)).collect();
        let got = coalesce(H, spans.clone(), 16);
        assert!(got.iter().all(|r| r.count <= 125), "{got:?}");
        assert_eq!(got.len(), 3);
        for (start, len) in spans {
            assert!(
                got.iter()
                    .any(|r| r.start <= start && u32::from(start + len) <= r.end()),
                "{start} not covered by one request"
            );
        }
        // A gap too large to span.
        let got = coalesce(RegisterType::Input, [(0, 2), (100, 2)], 16);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_block_over_125_registers_is_cut_at_125() {
        // SunSpec model 160-like block of 300 registers followed by a 52-register one.
        let got = coalesce(H, [(40000, 300), (40300, 52)], 16);
        assert_eq!(
            got,
            vec![req(H, 40000, 125), req(H, 40125, 125), req(H, 40250, 102)]
        );
        // The end of the address space.
        let got = coalesce(H, [(65535, 1)], 16);
        assert_eq!(got, vec![req(H, 65535, 1)]);
    }

    #[test]
    fn bits_are_read_up_to_2000_per_request() {
        let c = RegisterType::Coil;
        let got = coalesce(c, [(0, 1), (100, 1), (1999, 1), (2000, 1)], 128);
        assert_eq!(got, vec![req(c, 0, 101), req(c, 1999, 2)]);
        let got = coalesce(c, (0..2500).map(|i| (i, 1)), 128);
        assert_eq!(got, vec![req(c, 0, 2000), req(c, 2000, 500)]);
    }

    #[test]
    fn reads_gather_blocks_split_over_requests() {
        let mut reads = Reads::default();
        reads.push(req(H, 100, 3), Data::Words(vec![1, 2, 3]));
        reads.push(req(H, 103, 2), Data::Words(vec![4, 5]));
        reads.push(
            req(RegisterType::Coil, 7, 3),
            Data::Bits(vec![true, false, true]),
        );
        assert_eq!(reads.words(H, 101, 4), Some(vec![2, 3, 4, 5]));
        assert_eq!(reads.words(H, 104, 2), None);
        assert_eq!(reads.words(RegisterType::Input, 100, 1), None);
        assert_eq!(reads.bit(RegisterType::Coil, 9), Some(true));
        assert_eq!(reads.bit(RegisterType::Coil, 8), Some(false));
        assert_eq!(reads.bit(RegisterType::Discrete, 8), None);
    }
}
