//! Catch-up pages, read once for all the viewers that need them.
//!
//! A viewer catching up holds a page of events, in wire form, until it has sent them: most
//! of what catching up costs the server. Viewers that join a long channel together read it
//! from the same place page by page, so a page is shared while anyone holds it: the first
//! to ask reads it from the store, the others that ask meanwhile wait for that read and
//! send the same bytes, and it is dropped when the last of them is done. Viewers catching
//! up at once then hold a page for each place they have reached, not one each.
//!
//! Only a full page is handed to a viewer that did not read it: its events are fixed,
//! whoever reads them and whenever. The last page of a channel may grow after it was read,
//! and a viewer that began catching up after that read would miss what was stored between
//! (its outlet notes only events published after it began), so such a viewer reads the last
//! page again itself.

use std::{
    future::Future,
    sync::{Arc, Weak},
};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::outlet::text_frame;
use crate::{
    domain::StoredEvent,
    store::{StoreResult, page_may_continue},
};

/// A channel, and the `seq` its page reads after.
type Key = (Uuid, i64);
type Open = DashMap<Key, Weak<Shared>>;

/// The pages being read or sent, by where they start.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    open: Arc<Open>,
}

/// A page of events as a viewer sends them.
#[derive(Debug)]
pub(crate) struct Page {
    /// Each event's `seq` and its frame on the wire.
    events: Vec<(i64, Bytes)>,
    /// The page is full: more events may follow it.
    full: bool,
}

/// A page, shared while anyone holds it.
#[derive(Debug)]
pub(crate) struct PageRef(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    page: OnceCell<Page>,
    key: Key,
    /// Where it is listed while it lives, if it is listed.
    open: Weak<Open>,
}

impl Pages {
    /// The events of `channel` after `after`, a page as `read` reads it: from a page other
    /// viewers hold or are reading, if it is full, and otherwise by calling `read`.
    pub(crate) async fn read<F, Fut>(
        &self,
        channel: Uuid,
        after: i64,
        limit: u32,
        read: F,
    ) -> StoreResult<PageRef>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StoreResult<Vec<StoredEvent>>>,
    {
        let shared = self.shared((channel, after));
        let mut read_here = false;
        let page = shared
            .page
            .get_or_try_init(|| {
                read_here = true;
                async { Ok::<_, crate::store::StoreError>(Page::new(read().await?, limit)) }
            })
            .await?;
        if page.full || read_here {
            return Ok(PageRef(shared));
        }
        drop(shared);
        let page = Page::new(read().await?, limit);
        Ok(PageRef(Arc::new(Shared {
            page: OnceCell::new_with(Some(page)),
            key: (channel, after),
            open: Weak::new(),
        })))
    }

    /// The page starting at `key` that others hold, or a new one, listed.
    fn shared(&self, key: Key) -> Arc<Shared> {
        let mut entry = self.open.entry(key).or_default();
        if let Some(shared) = entry.upgrade() {
            return shared;
        }
        let shared = Arc::new(Shared {
            page: OnceCell::new(),
            key,
            open: Arc::downgrade(&self.open),
        });
        *entry = Arc::downgrade(&shared);
        shared
    }

    /// How many pages are listed: held, or being read.
    #[cfg(test)]
    fn listed(&self) -> usize {
        self.open.len()
    }
}

impl Page {
    fn new(events: Vec<StoredEvent>, limit: u32) -> Self {
        Self {
            full: page_may_continue(&events, limit),
            events: events
                .iter()
                .map(|event| (event.seq, text_frame(&event.frame)))
                .collect(),
        }
    }
}

impl PageRef {
    pub(crate) fn events(&self) -> &[(i64, Bytes)] {
        self.page().map_or(&[], |page| &page.events)
    }

    /// Whether more events may follow this page.
    pub(crate) fn full(&self) -> bool {
        self.page().is_some_and(|page| page.full)
    }

    fn page(&self) -> Option<&Page> {
        self.0.page.get()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Unlisted unless another page has taken its place meanwhile.
        if let Some(open) = self.open.upgrade() {
            open.remove_if(&self.key, |_, listed| listed.strong_count() == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::StoreError;

    fn stored(seqs: std::ops::RangeInclusive<i64>) -> Vec<StoredEvent> {
        seqs.map(|seq| StoredEvent {
            seq,
            frame: format!("{{\"seq\":{seq}}}"),
        })
        .collect()
    }

    #[tokio::test]
    async fn viewers_reading_the_same_full_page_at_once_share_one_read_and_its_bytes() {
        let (pages, channel, reads) = (Pages::default(), Uuid::now_v7(), AtomicUsize::new(0));
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(stored(11..=14))
        };
        let (one, other) = tokio::join!(
            pages.read(channel, 10, 4, read),
            pages.read(channel, 10, 4, read)
        );
        let (one, other) = (one.unwrap(), other.unwrap());
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(one.full());
        assert_eq!(one.events().len(), 4);
        assert_eq!(one.events()[0].0, 11);
        assert!(
            one.events()[0].1.as_ptr() == other.events()[0].1.as_ptr(),
            "both send the same bytes"
        );
        let later = pages.read(channel, 10, 4, read).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1, "held, so shared later too");
        drop((one, other, later));
        assert_eq!(pages.listed(), 0, "dropped with its last holder");
        pages.read(channel, 10, 4, read).await.unwrap();
        assert_eq!(
            reads.load(Ordering::SeqCst),
            2,
            "read again once nobody held it"
        );
    }

    #[tokio::test]
    async fn a_last_page_read_by_another_viewer_is_read_again_with_what_came_since() {
        let (pages, channel) = (Pages::default(), Uuid::now_v7());
        let stored_now = std::sync::Mutex::new(2);
        let read = || async { Ok(stored(1..=*stored_now.lock().unwrap())) };
        let first = pages.read(channel, 0, 4, read).await.unwrap();
        assert!(!first.full());
        assert_eq!(first.events().len(), 2);
        *stored_now.lock().unwrap() = 3;
        let second = pages.read(channel, 0, 4, read).await.unwrap();
        assert_eq!(second.events().len(), 3, "the event stored since is there");
        assert_eq!(
            first.events().len(),
            2,
            "the first viewer's page is its own"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared_and_the_next_viewer_reads_again() {
        let (pages, channel, reads) = (Pages::default(), Uuid::now_v7(), AtomicUsize::new(0));
        let failing = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict("the store failed".into()))
        };
        assert!(pages.read(channel, 0, 4, failing).await.is_err());
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(stored(1..=4))
        };
        let page = pages.read(channel, 0, 4, read).await.unwrap();
        assert_eq!(page.events().len(), 4);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
