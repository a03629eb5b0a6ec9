//! A leg's dialog strings in one allocation (pure, no IO).
//!
//! Every call up keeps two legs, each with seven short strings (Call-ID,
//! tags, From, To, target, Via sent-by, Contact) that rarely change after
//! setup. Held in one buffer they cost one heap block instead of seven, with
//! no spare capacity; changing one (a learned To tag, a target refresh)
//! rewrites the buffer, which happens a handful of times per call.

/// Which of a leg's strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The leg's Call-ID.
    CallId,
    /// Our tag on this leg.
    LocalTag,
    /// What we write as From on requests we send on this leg (with our tag).
    Local,
    /// What we write as To (with the peer's tag once known).
    Remote,
    /// Request-URI for in-dialog requests (the peer's Contact).
    RemoteTarget,
    /// `SIP/2.0/UDP ip:port`.
    SentBy,
    /// Our Contact on this leg.
    Contact,
}

const PARTS: usize = 7;

/// The seven strings of [`Part`], end to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LegText {
    text: Box<str>,
    /// Where each part ends in `text`, in [`Part`] order.
    ends: [u32; PARTS],
}

impl LegText {
    /// The parts, in [`Part`] order.
    pub(super) fn new(parts: [&str; PARTS]) -> LegText {
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; PARTS];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            // Every part comes from one SIP message (bounded far below
            // 4 GiB by the parser's limits) or is written by the core.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        LegText {
            text: text.into_boxed_str(),
            ends,
        }
    }

    /// One part.
    pub(super) fn get(&self, part: Part) -> &str {
        let i = part as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// Replaces one part (the others are kept).
    pub(super) fn set(&mut self, part: Part, value: &str) {
        let mut parts = [""; PARTS];
        for (i, slot) in parts.iter_mut().enumerate() {
            *slot = if i == part as usize {
                value
            } else {
                self.get(ALL[i])
            };
        }
        *self = LegText::new(parts);
    }
}

/// Every part, in order.
pub(super) const ALL: [Part; PARTS] = [
    Part::CallId,
    Part::LocalTag,
    Part::Local,
    Part::Remote,
    Part::RemoteTarget,
    Part::SentBy,
    Part::Contact,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_reads_back_and_changes_alone() {
        let values = [
            "cid@host",
            "",
            "<sip:a@x>;tag=1",
            "<sip:b@y>",
            "sip:b@10.0.0.1",
            "SIP/2.0/UDP 192.0.2.1:5060",
            "<sip:sbc@192.0.2.1:5060>",
        ];
        let mut text = LegText::new(values);
        for (part, value) in ALL.into_iter().zip(values) {
            assert_eq!(text.get(part), value, "{part:?}");
        }
        text.set(Part::Remote, "<sip:b@y>;tag=9");
        text.set(Part::LocalTag, "t1");
        for (part, value) in ALL.into_iter().zip(values) {
            let want = match part {
                Part::Remote => "<sip:b@y>;tag=9",
                Part::LocalTag => "t1",
                _ => value,
            };
            assert_eq!(text.get(part), want, "{part:?}");
        }
    }
}
