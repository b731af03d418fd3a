//! An account's feed: the lasting changes of its collaborations, in the order they were
//! stored, each numbered (`rev`) 1, 2, 3 … per account with no gaps. `GET /events` streams
//! it, and resumes after the last number a client saw.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to a collaboration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    /// It ended: its status is no longer `running`.
    Ended,
    /// Its summary (headline, outcome) was written.
    Summarized,
    Deleted,
}

text_enum!(ChangeKind);

/// One numbered change of an account's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub rev: i64,
    pub collaboration_id: Uuid,
    pub kind: ChangeKind,
    pub at: DateTime<Utc>,
}

/// A page of an account's feed after some `rev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPage {
    /// The changes after the asked `rev`, oldest first.
    pub changes: Vec<Change>,
    /// The account's last `rev` when the page was read.
    pub latest: i64,
    /// Changes right after the asked `rev` are no longer kept: the reader cannot resume
    /// from it, only start again from `latest`.
    pub gap: bool,
}

impl FeedPage {
    /// Reads what the page says: `after` is the rev it was asked after, `rows` the kept
    /// changes after it (oldest first), `latest` the account's counter.
    pub fn new(after: i64, changes: Vec<Change>, latest: i64) -> Self {
        // A rev past the latest was not given by this database (it was restored, or the
        // client was pointed elsewhere): as lost as a purged one.
        let gap = after > latest
            || (after < latest && changes.first().is_none_or(|first| first.rev != after + 1));
        Self {
            changes,
            latest,
            gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rev: i64) -> Change {
        Change {
            rev,
            collaboration_id: Uuid::nil(),
            kind: ChangeKind::Created,
            at: Utc::now(),
        }
    }

    #[test]
    fn a_page_that_does_not_start_right_after_the_asked_rev_has_lost_changes() {
        assert!(!FeedPage::new(3, vec![change(4), change(5)], 5).gap);
        assert!(
            !FeedPage::new(5, Vec::new(), 5).gap,
            "nothing new is no gap"
        );
        assert!(
            FeedPage::new(3, vec![change(6)], 6).gap,
            "4 and 5 were purged"
        );
        assert!(
            FeedPage::new(3, Vec::new(), 6).gap,
            "all of them were purged"
        );
        assert!(
            FeedPage::new(9, Vec::new(), 6).gap,
            "a rev this database never gave cannot be resumed from"
        );
    }
}
