//! Teams: stored per account, found by id or address, and the collaborations they start
//! listed by team and by conversation.

use skein::{
    domain::{AgentAddress, AgentRef, PageRequest, Strategy, Team, TeamDefaults, TeamMember},
    store::CollaborationFilter,
};
use uuid::Uuid;

use crate::support::{each_store, later, now, team};

fn saved(
    account_id: Uuid,
    name: &str,
    principal: &skein::domain::Agent,
    participant: &skein::domain::Agent,
) -> Team {
    Team {
        id: Uuid::now_v7(),
        account_id,
        address: AgentAddress::generate(),
        name: name.into(),
        description: Some("plans things".into()),
        principal: TeamMember {
            id: principal.id,
            name: principal.name.clone(),
        },
        participants: vec![TeamMember {
            id: participant.id,
            name: participant.name.clone(),
        }],
        defaults: TeamDefaults {
            message_cap: 12,
            timeout_window: 90,
            strategy: Strategy::RoundRobin,
            evaluate_objective_completion: false,
            token_budget: Some(5000),
            cost_budget_micros: None,
            allow_interjections: true,
        },
        answers_uagents: true,
        saved_by: Uuid::now_v7(),
        created_at: now(),
        updated_at: now(),
    }
}

#[tokio::test]
async fn a_team_is_stored_found_listed_updated_and_deleted_in_its_account() {
    each_store(|store| async move {
        let agents = team(&store, "tenant").await;
        let account = agents.tenant.id();
        let other = crate::support::tenant(&store, "other").await;
        let first = saved(account, "First", &agents.principal, &agents.participant);
        let mut second = saved(account, "Second", &agents.principal, &agents.participant);
        second.created_at = later(1);
        store.insert_team(&first).await.unwrap();
        store.insert_team(&second).await.unwrap();

        let by_id = store
            .get_team(account, &AgentRef::Id(first.id))
            .await
            .unwrap();
        assert_eq!(by_id.as_ref(), Some(&first));
        let by_address = store
            .get_team(account, &AgentRef::Address(first.address.clone()))
            .await
            .unwrap();
        assert_eq!(by_address.as_ref(), Some(&first));
        assert_eq!(
            store
                .get_team(other.id(), &AgentRef::Id(first.id))
                .await
                .unwrap(),
            None,
            "another account's team is not found"
        );
        assert_eq!(
            store
                .team_by_address(&second.address)
                .await
                .unwrap()
                .as_ref(),
            Some(&second),
            "by address alone, for uAgents"
        );

        let (listed, total) = store
            .list_teams(account, PageRequest { page: 1, size: 1 })
            .await
            .unwrap();
        assert_eq!((listed, total), (vec![second.clone()], 2), "newest first");
        assert_eq!(
            store
                .list_teams(other.id(), PageRequest::default())
                .await
                .unwrap()
                .1,
            0
        );

        let mut changed = first.clone();
        changed.name = "First, renamed".into();
        changed.defaults.message_cap = 3;
        changed.updated_at = later(2);
        assert!(store.update_team(&changed).await.unwrap());
        assert_eq!(
            store
                .get_team(account, &AgentRef::Id(first.id))
                .await
                .unwrap(),
            Some(changed)
        );
        assert!(!store.delete_team(other.id(), first.id).await.unwrap());
        assert!(store.delete_team(account, first.id).await.unwrap());
        assert_eq!(
            store
                .get_team(account, &AgentRef::Id(first.id))
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn a_team_s_collaborations_are_listed_by_team_and_by_conversation() {
    each_store(|store| async move {
        let agents = team(&store, "tenant").await;
        let account = agents.tenant.id();
        let team_id = Uuid::now_v7();
        let context_id = Uuid::new_v4();
        let mut ids = Vec::new();
        for (i, (team, context)) in [
            (Some(team_id), Some(context_id)),
            (Some(team_id), None),
            (None, None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut new = agents.collaboration(10);
            new.team_id = team;
            new.context_id = context;
            new.created_at = later(i as i64);
            store.insert_collaboration(&new, 100, None).await.unwrap();
            ids.push(new.id);
        }
        let stored = store
            .get_collaboration(account, ids[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stored.team_id, stored.context_id),
            (Some(team_id), Some(context_id))
        );
        let list = |filter: CollaborationFilter| {
            let store = store.clone();
            async move {
                let (items, total) = store
                    .list_collaborations(account, &filter, PageRequest::default())
                    .await
                    .unwrap();
                (items.into_iter().map(|c| c.id).collect::<Vec<_>>(), total)
            }
        };
        let by_team = CollaborationFilter {
            team_id: Some(team_id),
            ..Default::default()
        };
        assert_eq!(list(by_team).await, (vec![ids[1], ids[0]], 2));
        let by_conversation = CollaborationFilter {
            team_id: Some(team_id),
            context_id: Some(context_id),
            ..Default::default()
        };
        assert_eq!(list(by_conversation).await, (vec![ids[0]], 1));
    })
    .await;
}
