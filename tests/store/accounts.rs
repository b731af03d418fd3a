//! Accounts and their API keys.

use skein::{
    domain::{Account, PageRequest, Scope},
    store::StoreError,
};
use uuid::Uuid;

use crate::support::{each_store, later, new_key, now, tenant, tenant_at};

#[tokio::test]
async fn accounts_are_listed_oldest_first_with_their_total() {
    each_store(|store| async move {
        assert_eq!(store.operator_account().await.unwrap(), None);
        let operator = tenant_at(&store, "operator", true, later(-30)).await;
        let second = tenant_at(&store, "second", false, later(-20)).await;
        let third = tenant_at(&store, "third", false, later(-10)).await;
        assert_eq!(store.operator_account().await.unwrap(), Some(operator.id()));

        let (first_page, total) = store
            .list_accounts(PageRequest { page: 1, size: 2 })
            .await
            .unwrap();
        assert_eq!(total, 3);
        let names: Vec<&str> = first_page.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["operator", "second"]);
        assert!(first_page[0].operator);
        assert!(!first_page[1].operator);
        assert_eq!(first_page[1].id, second.id());
        assert_eq!(first_page[1].created_at, second.account.created_at);

        let (last_page, total) = store
            .list_accounts(PageRequest { page: 2, size: 2 })
            .await
            .unwrap();
        assert_eq!(total, 3);
        assert_eq!(last_page.len(), 1);
        assert_eq!(last_page[0].id, third.id());
    })
    .await;
}

#[tokio::test]
async fn an_account_whose_first_key_cannot_be_stored_is_not_stored_either() {
    each_store(|store| async move {
        let existing = tenant(&store, "existing").await;
        let account = Account {
            id: Uuid::now_v7(),
            name: "clashing".into(),
            operator: false,
            created_at: now(),
        };
        let mut key = new_key(account.id, "first", vec![Scope::Admin], false);
        key.hash = existing.key.hash.clone();
        assert!(store.create_account(&account, &key).await.is_err());
        let (accounts, total) = store.list_accounts(PageRequest::default()).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(accounts[0].id, existing.id());
    })
    .await;
}

#[tokio::test]
async fn a_live_key_is_found_by_its_hash_with_its_account() {
    each_store(|store| async move {
        let operator = tenant_at(&store, "operator", true, now()).await;
        let other = tenant(&store, "other").await;

        let found = store.find_key(&operator.key.hash).await.unwrap().unwrap();
        assert!(found.operator);
        assert_eq!(found.key.id, operator.key.id);
        assert_eq!(found.key.account_id, operator.id());
        assert_eq!(found.key.name, "first");
        assert_eq!(found.key.prefix, operator.key.prefix);
        assert_eq!(found.key.scopes, [Scope::Read, Scope::Write]);
        assert!(!found.key.from_config);
        assert_eq!(found.key.last_used_at, None);
        assert_eq!(found.key.revoked_at, None);
        let found = store.find_key(&other.key.hash).await.unwrap().unwrap();
        assert!(!found.operator);

        assert!(store.find_key("no such hash").await.unwrap().is_none());
        assert!(store.key_exists(&other.key.hash).await.unwrap());
        assert!(!store.key_exists("no such hash").await.unwrap());

        let used_at = later(5);
        store.touch_key(other.key.id, used_at).await.unwrap();
        let key = store
            .get_key(other.id(), other.key.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key.last_used_at, Some(used_at));
        // Keys are scoped to their account.
        assert!(
            store
                .get_key(operator.id(), other.key.id)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn keys_are_listed_newest_first_per_account() {
    each_store(|store| async move {
        let tenant = tenant(&store, "tenant").await;
        tenant_at(&store, "other", false, now()).await;
        let mut names = vec!["first".to_owned()];
        for name in ["ci", "laptop"] {
            // Creation times are the store's own clock: keep them apart.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let key = new_key(tenant.id(), name, vec![Scope::Read], false);
            store.insert_key(&key, 100).await.unwrap();
            names.push(name.to_owned());
        }
        names.reverse();

        let (keys, total) = store
            .list_keys(tenant.id(), PageRequest { page: 1, size: 2 })
            .await
            .unwrap();
        assert_eq!(total, 3);
        let listed: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(listed, names[..2]);
        let (keys, _) = store
            .list_keys(tenant.id(), PageRequest { page: 2, size: 2 })
            .await
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name, names[2]);
        assert!(keys.iter().all(|k| k.account_id == tenant.id()));
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_stays_known_but_no_longer_authenticates() {
    each_store(|store| async move {
        let tenant = tenant(&store, "tenant").await;
        let other = tenant_at(&store, "other", false, now()).await;
        let key = tenant.key.clone();

        assert!(!store.revoke_key(other.id(), key.id, now()).await.unwrap());
        assert!(
            !store
                .revoke_key(tenant.id(), Uuid::now_v7(), now())
                .await
                .unwrap()
        );
        assert!(store.find_key(&key.hash).await.unwrap().is_some());

        let revoked_at = later(1);
        assert!(
            store
                .revoke_key(tenant.id(), key.id, revoked_at)
                .await
                .unwrap()
        );
        assert!(store.find_key(&key.hash).await.unwrap().is_none());
        assert!(store.key_exists(&key.hash).await.unwrap());
        // A second revoke succeeds and keeps the first time.
        assert!(
            store
                .revoke_key(tenant.id(), key.id, later(60))
                .await
                .unwrap()
        );
        let stored = store.get_key(tenant.id(), key.id).await.unwrap().unwrap();
        assert_eq!(stored.revoked_at, Some(revoked_at));
    })
    .await;
}

#[tokio::test]
async fn configured_keys_are_rotated_not_revoked() {
    each_store(|store| async move {
        let operator = tenant_at(&store, "operator", true, now()).await;
        let old = new_key(operator.id(), "admin", vec![Scope::Admin], true);
        let new = new_key(operator.id(), "admin", vec![Scope::Admin], true);
        store.insert_key(&old, 100).await.unwrap();
        store.insert_key(&new, 100).await.unwrap();

        match store.revoke_key(operator.id(), old.id, now()).await {
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("SKEIN_ADMIN_KEY"), "{message}")
            }
            other => panic!("a configured key was revoked over the API: {other:?}"),
        }
        assert!(
            store
                .find_key(&old.hash)
                .await
                .unwrap()
                .unwrap()
                .key
                .from_config
        );

        let revoked = store.revoke_config_keys_except(&new.hash).await.unwrap();
        assert_eq!(revoked, [old.id]);
        assert!(store.find_key(&old.hash).await.unwrap().is_none());
        assert!(store.find_key(&new.hash).await.unwrap().is_some());
        // Keys made over the API are not the configuration's to revoke.
        assert!(store.find_key(&operator.key.hash).await.unwrap().is_some());
        assert!(
            store
                .revoke_config_keys_except(&new.hash)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}
