//! Why the server closes a viewer's stream, as the close code a client decides by. The
//! reason text beside it is for people; no client should have to read it.
//!
//! | code | meaning | what a client does |
//! |---|---|---|
//! | 1001 | the server is shutting down | reconnect, resuming from its last `seq` |
//! | 1008 | refused before any frame: unknown channel, or an invalid, used or expired ticket or key | with a ticket: ask for a new one (that request says whether the channel or the key is gone); with a key: give up |
//! | 1009 | the viewer sent a message over the size limit | give up, or send less |
//! | 1011 | an internal error | reconnect |
//! | 4403 | the stream's API key was revoked | give up |
//! | 4410 | the collaboration was deleted | give up |
//!
//! A viewer that stops reading or answering pings is dropped without a close frame; it
//! reconnects like after any drop.

use tungstenite::protocol::frame::coding::CloseCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    ShuttingDown,
    Refused,
    TooBig,
    Failed,
    KeyRevoked,
    Deleted,
}

impl Close {
    const ALL: [Self; 6] = [
        Self::ShuttingDown,
        Self::Refused,
        Self::TooBig,
        Self::Failed,
        Self::KeyRevoked,
        Self::Deleted,
    ];

    pub const fn code(self) -> u16 {
        match self {
            Self::ShuttingDown => 1001,
            Self::Refused => 1008,
            Self::TooBig => 1009,
            Self::Failed => 1011,
            Self::KeyRevoked => 4403,
            Self::Deleted => 4410,
        }
    }

    /// The close a code stands for, if it is one of the server's.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|close| close.code() == code)
    }

    /// Whether reconnecting is pointless: the server will close again for the same reason.
    pub const fn is_final(self) -> bool {
        !matches!(self, Self::ShuttingDown | Self::Failed)
    }

    /// The reason sent with the code, for people.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::ShuttingDown => "the server is shutting down",
            Self::Refused => "the stream was refused",
            Self::TooBig => "the message is larger than the limit",
            Self::Failed => "internal error",
            Self::KeyRevoked => "the API key was revoked",
            Self::Deleted => "the collaboration was deleted",
        }
    }

    pub(crate) fn frame_code(self) -> CloseCode {
        CloseCode::from(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_is_found_again_by_its_code_and_codes_are_distinct() {
        for close in Close::ALL {
            assert_eq!(Close::from_code(close.code()), Some(close));
            // Standard codes where RFC 6455 means exactly this, application codes (4000-4999)
            // for Skein's own reasons.
            assert!(matches!(
                close.code(),
                1001 | 1008 | 1009 | 1011 | 4000..=4999
            ));
        }
        assert_eq!(Close::from_code(1000), None);
    }
}
