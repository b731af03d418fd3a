//! Agents: stored per account, unique by address, kept while a collaboration uses them.

use skein::{
    domain::{AgentRef, AgentSpec, PageRequest},
    store::StoreError,
};
use uuid::Uuid;

use crate::support::{agent, agent_value, each_store, later, team, tenant};

#[tokio::test]
async fn an_agent_is_found_by_id_and_by_address_in_its_account() {
    each_store(|store| async move {
        let tenant = tenant(&store, "tenant").await;
        let other = crate::support::tenant(&store, "other").await;
        let mut stored = agent_value(tenant.id(), "http agent");
        stored.spec = AgentSpec::Http {
            endpoint: "https://agents.example/turn".into(),
        };
        stored.secret = Some(skein::secrets::Secret::new("whsec_c2VjcmV0"));
        store.insert_agent(&stored).await.unwrap();

        let by_id = store
            .get_agent(tenant.id(), &AgentRef::Id(stored.id))
            .await
            .unwrap();
        assert_eq!(by_id.as_ref(), Some(&stored));
        let by_address = store
            .get_agent(tenant.id(), &AgentRef::Address(stored.address.clone()))
            .await
            .unwrap();
        assert_eq!(by_address.as_ref(), Some(&stored));
        assert_eq!(
            store
                .get_agent(other.id(), &AgentRef::Id(stored.id))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .get_agent(tenant.id(), &AgentRef::Id(Uuid::now_v7()))
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

/// A roster is looked up in one query: by id and by address at once, only in the account,
/// and what names nothing is left out.
#[tokio::test]
async fn several_agents_are_found_at_once_by_id_or_address() {
    each_store(|store| async move {
        let tenant = tenant(&store, "tenant").await;
        let other = crate::support::tenant(&store, "other").await;
        let (one, two) = (
            agent_value(tenant.id(), "one"),
            agent_value(tenant.id(), "two"),
        );
        let elsewhere = agent_value(other.id(), "elsewhere");
        for agent in [&one, &two, &elsewhere] {
            store.insert_agent(agent).await.unwrap();
        }
        let refs = [
            AgentRef::Id(one.id),
            AgentRef::Address(two.address.clone()),
            AgentRef::Id(elsewhere.id),
            AgentRef::Address(elsewhere.address.clone()),
            AgentRef::Id(Uuid::now_v7()),
        ];
        let mut found = store.get_agents(tenant.id(), &refs).await.unwrap();
        found.sort_by_key(|agent| agent.name.clone());
        assert_eq!(found, [one, two]);
        assert_eq!(store.get_agents(tenant.id(), &[]).await.unwrap(), []);
    })
    .await;
}

#[tokio::test]
async fn an_address_is_used_once_per_account() {
    each_store(|store| async move {
        let tenant = tenant(&store, "tenant").await;
        let other = crate::support::tenant(&store, "other").await;
        let first = agent(&store, tenant.id(), "first").await;

        let mut twin = agent_value(tenant.id(), "twin");
        twin.address = first.address.clone();
        match store.insert_agent(&twin).await {
            Err(StoreError::Conflict(message)) => assert_eq!(
                message,
                format!("an agent with address {} already exists", first.address)
            ),
            other => panic!("a second agent took the address: {other:?}"),
        }
        // Another account may use it.
        twin.account_id = other.id();
        store.insert_agent(&twin).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn agents_are_listed_updated_and_read_by_id_across_accounts() {
    each_store(|store| async move {
        let tenant = tenant(&store, "tenant").await;
        let other = crate::support::tenant(&store, "other").await;
        let mut agents = Vec::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let mut value = agent_value(tenant.id(), name);
            value.created_at = later(i as i64);
            value.updated_at = value.created_at;
            store.insert_agent(&value).await.unwrap();
            agents.push(value);
        }
        let foreign = agent(&store, other.id(), "foreign").await;

        let (page, total) = store
            .list_agents(tenant.id(), PageRequest { page: 1, size: 2 })
            .await
            .unwrap();
        assert_eq!(total, 3);
        let names: Vec<&str> = page.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["c", "b"]);

        let mut found = store
            .agents_unscoped(&[agents[0].id, foreign.id, Uuid::now_v7()])
            .await
            .unwrap();
        found.sort_by_key(|a| a.name.clone());
        assert_eq!(found, [agents[0].clone(), foreign]);
        assert!(store.agents_unscoped(&[]).await.unwrap().is_empty());

        let mut changed = agents[1].clone();
        changed.name = "renamed".into();
        changed.description = None;
        changed.spec = AgentSpec::Llm {
            provider: "default".into(),
            model: "small".into(),
            system_prompt: Some("Be brief.".into()),
            temperature: Some(0.5),
            max_tokens: Some(200),
            tools: vec![skein::domain::ToolServer {
                url: "https://tools.example/mcp".into(),
                name: "tools".into(),
                allow: Some(vec!["search".into()]),
                credential_headers: vec!["Authorization".into()],
            }],
        };
        // Tool credentials are kept (sealed) and come back as they were.
        changed.tool_credentials = Some(skein::secrets::Secret::new(
            r#"[{"Authorization":"Bearer t0ken"}]"#,
        ));
        changed.updated_at = later(100);
        store.update_agent(&changed).await.unwrap();
        let stored = store
            .get_agent(tenant.id(), &AgentRef::Id(changed.id))
            .await
            .unwrap();
        assert_eq!(stored, Some(changed));
    })
    .await;
}

#[tokio::test]
async fn an_agent_in_a_collaboration_is_not_deleted() {
    each_store(|store| async move {
        let team = team(&store, "team").await;
        let account = team.tenant.id();
        let idle = agent(&store, account, "idle").await;
        let collaboration = team.start(&store, 10).await;

        assert!(!store.delete_agent(account, Uuid::now_v7()).await.unwrap());
        assert!(store.delete_agent(account, idle.id).await.unwrap());
        match store.delete_agent(account, team.participant.id).await {
            Err(StoreError::Conflict(message)) => assert_eq!(
                message,
                "the agent takes part in collaborations; delete those first"
            ),
            other => panic!("an agent in use was deleted: {other:?}"),
        }
        assert!(
            store
                .get_agent(account, &AgentRef::Id(team.participant.id))
                .await
                .unwrap()
                .is_some()
        );

        assert!(
            store
                .delete_collaboration(account, collaboration.id)
                .await
                .unwrap()
        );
        assert!(
            store
                .delete_agent(account, team.participant.id)
                .await
                .unwrap()
        );
        assert!(
            store
                .get_agent(account, &AgentRef::Id(team.participant.id))
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}
