//! Introspection endpoints and the in-memory CRM, in the JSON shapes the HubSpot SDKs parse.

use crate::support::*;
use serde_json::{json, Value};

#[tokio::test]
async fn oauth_and_private_app_introspection() {
    let (sim, c) = start(config()).await;
    let r = c
        .call(
            "GET",
            &format!("/oauth/v1/access-tokens/{OAUTH}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["token"], OAUTH);
    assert_eq!(b["hub_id"], PORTAL);
    assert_eq!(b["app_id"], OAUTH_APP);
    assert_eq!(b["expires_in"], 1800);
    assert_eq!(b["token_type"], "access");
    assert!(b["hub_domain"].is_string());
    assert!(b["user"].is_string());
    assert!(b["user_id"].is_u64());
    assert!(b["scopes"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(r.rate_headers().is_empty());

    for token in [PAT, "nope"] {
        let r = c
            .call(
                "GET",
                &format!("/oauth/v1/access-tokens/{token}"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["status"], "error");
        assert!(r.json()["correlationId"].is_string());
    }

    let info = "/oauth/v2/private-apps/get/access-token-info";
    let r = c
        .call("POST", info, None, Some(json!({ "tokenKey": PAT })))
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["hubId"], PORTAL);
    assert_eq!(b["appId"], PAT_APP);
    assert!(b["userId"].is_u64());
    assert!(b["scopes"].is_array());
    let r = c
        .call(
            "POST",
            info,
            None,
            Some(json!({ "tokenKey": "pat-na1-unknown" })),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["category"], "INVALID_AUTHENTICATION");
    let r = c.call("POST", info, None, Some(json!({ "x": 1 }))).await;
    assert_eq!(r.status, 400);

    let s = sim.stats();
    assert_eq!(s.introspection.oauth_access_token, 3);
    assert_eq!(s.introspection.private_app_token_info, 3);
    assert_eq!(s.introspection.total, 6);
    assert_eq!(s.introspection.by_token.get(OAUTH), Some(&1));
    // Introspection is not an API call of any owner.
    assert!(s.owners.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_introspections_are_all_counted() {
    let (sim, c) = start(config()).await;
    let calls = (0..100).map(|_| {
        let c = c.clone();
        async move {
            c.call(
                "GET",
                &format!("/oauth/v1/access-tokens/{OAUTH}"),
                None,
                None,
            )
            .await
            .status
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let s = c.stats().await;
    assert_eq!(s.introspection.oauth_access_token, 100);
    assert_eq!(s.introspection.by_token.get(OAUTH), Some(&100));
    sim.shutdown().await;
}

fn assert_object_shape(o: &Value) {
    assert!(o["id"].is_string(), "id must be a string: {o}");
    for k in ["createdAt", "updatedAt"] {
        let ts = o[k].as_str().expect("timestamp");
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
    }
    assert_eq!(o["archived"], false);
    assert_eq!(o["properties"]["hs_object_id"], o["id"]);
    assert!(o["properties"]["createdate"].is_string());
    assert!(o["properties"]["lastmodifieddate"].is_string());
}

async fn crm_round_trip(c: &Client, base: &str) {
    // Create.
    let r = c
        .call(
            "POST",
            &format!("{base}/contacts"),
            Some(PAT),
            Some(json!({ "properties": { "email": "ada@example.com", "firstname": "Ada", "age": 36 } })),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let ada = r.json();
    assert_object_shape(&ada);
    assert_eq!(ada["properties"]["age"], "36");
    let ada_id = ada["id"].as_str().expect("id").to_string();

    // Get, with a property selection.
    let r = c
        .get(
            &format!("{base}/contacts/{ada_id}?properties=email,lastname"),
            PAT,
        )
        .await;
    assert_eq!(r.status, 200);
    let got = r.json();
    assert_object_shape(&got);
    assert_eq!(got["properties"]["email"], "ada@example.com");
    assert!(got["properties"]["lastname"].is_null());
    assert!(got["properties"].get("firstname").is_none());

    // Missing object: HubSpot's single-GET 404.
    let r = c.get(&format!("{base}/contacts/999999999"), PAT).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "resource not found");
    assert!(r.json()["correlationId"].is_string());

    // Update.
    let r = c
        .call(
            "PATCH",
            &format!("{base}/contacts/{ada_id}"),
            Some(PAT),
            Some(json!({ "properties": { "lastname": "Lovelace" } })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["properties"]["lastname"], "Lovelace");
    assert_eq!(r.json()["properties"]["firstname"], "Ada");

    // Batch create, read, update, upsert.
    let inputs: Vec<Value> = (0..4)
        .map(|i| json!({ "properties": { "email": format!("u{i}@example.com"), "tier": if i % 2 == 0 { "gold" } else { "silver" } } }))
        .collect();
    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/create"),
            Some(PAT),
            Some(json!({ "inputs": inputs })),
        )
        .await;
    assert_eq!(r.status, 201);
    let b = r.json();
    assert_eq!(b["status"], "COMPLETE");
    assert!(b["startedAt"].is_string() && b["completedAt"].is_string());
    let ids: Vec<String> = b["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| {
            assert_object_shape(o);
            o["id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids.len(), 4);

    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/read"),
            Some(PAT),
            Some(
                json!({ "properties": ["email"], "inputs": [{ "id": ids[0] }, { "id": ids[1] }] }),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"].as_array().map(Vec::len), Some(2));
    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/read"),
            Some(PAT),
            Some(json!({ "inputs": [{ "id": ids[0] }, { "id": "424242" }] })),
        )
        .await;
    assert_eq!(r.status, 207);
    assert_eq!(r.json()["numErrors"], 1);

    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/update"),
            Some(PAT),
            Some(json!({ "inputs": [{ "id": ids[0], "properties": { "tier": "platinum" } }] })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["properties"]["tier"], "platinum");

    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/upsert"),
            Some(PAT),
            Some(json!({ "inputs": [
                { "idProperty": "email", "id": "u1@example.com", "properties": { "tier": "bronze" } },
                { "idProperty": "email", "id": "new@example.com", "properties": { "tier": "bronze" } },
            ] })),
        )
        .await;
    assert_eq!(r.status, 200);
    let res = r.json()["results"].clone();
    assert_eq!(res[0]["new"], false);
    assert_eq!(res[0]["id"], ids[1].as_str());
    assert_eq!(res[1]["new"], true);
    assert_eq!(res[1]["properties"]["email"], "new@example.com");

    let too_many: Vec<Value> = (0..101).map(|_| json!({ "properties": {} })).collect();
    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/create"),
            Some(PAT),
            Some(json!({ "inputs": too_many })),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");

    // List with paging: ada + 4 + new = 6 contacts.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("{base}/contacts?limit=4&after={a}"),
            None => format!("{base}/contacts?limit=4"),
        };
        let b = c.get(&path, PAT).await.json();
        for o in b["results"].as_array().expect("results") {
            assert_object_shape(o);
            seen.push(o["id"].as_str().expect("id").to_string());
        }
        match b["paging"]["next"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);

    // Search with an EQ filter and paging.
    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/search"),
            Some(PAT),
            Some(json!({
                "filterGroups": [{ "filters": [{ "propertyName": "tier", "operator": "EQ", "value": "bronze" }] }],
                "properties": ["email", "tier"],
                "limit": 1,
            })),
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["total"], 2);
    assert_eq!(b["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(b["results"][0]["properties"]["tier"], "bronze");
    assert_eq!(b["paging"]["next"]["after"], "1");

    // Associations v4.
    let r = c
        .call(
            "POST",
            &format!("{base}/companies"),
            Some(PAT),
            Some(json!({ "properties": { "name": "Analytical Engines" } })),
        )
        .await;
    let company = r.json()["id"].as_str().expect("id").to_string();
    let r = c
        .call(
            "PUT",
            &format!("/crm/v4/objects/contacts/{ada_id}/associations/default/companies/{company}"),
            Some(PAT),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["status"], "COMPLETE");
    assert_eq!(b["results"][0]["associationSpec"]["associationTypeId"], 279);
    let r = c
        .get(
            &format!("/crm/v4/objects/contacts/{ada_id}/associations/companies"),
            PAT,
        )
        .await;
    assert_eq!(r.status, 200);
    let b = r.json();
    assert_eq!(b["results"][0]["toObjectId"].to_string(), company);
    assert_eq!(
        b["results"][0]["associationTypes"][0]["category"],
        "HUBSPOT_DEFINED"
    );
    let r = c
        .get(
            &format!("/crm/v4/objects/companies/{company}/associations/contacts"),
            PAT,
        )
        .await;
    assert_eq!(r.json()["results"][0]["toObjectId"].to_string(), ada_id);

    // Archive, single and batch.
    let r = c
        .call(
            "DELETE",
            &format!("{base}/contacts/{ada_id}"),
            Some(PAT),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get(&format!("{base}/contacts/{ada_id}"), PAT)
            .await
            .status,
        404
    );
    let r = c
        .call(
            "POST",
            &format!("{base}/contacts/batch/archive"),
            Some(PAT),
            Some(json!({ "inputs": [{ "id": ids[0] }] })),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get(&format!("{base}/contacts/{}", ids[0]), PAT)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn crm_round_trip_v3() {
    let (sim, c) = start(config()).await;
    crm_round_trip(&c, "/crm/v3/objects").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn crm_round_trip_date_versioned() {
    let (sim, c) = start(config()).await;
    crm_round_trip(&c, "/crm/objects/2025-09").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn stores_are_per_portal_and_unknown_routes_are_hubspot_404s() {
    let (sim, c) = start(config()).await;
    let r = c
        .call(
            "POST",
            "/crm/v3/objects/deals",
            Some(PAT),
            Some(json!({ "properties": { "dealname": "x" } })),
        )
        .await;
    let id = r.json()["id"].as_str().expect("id").to_string();
    // Same portal, other app: visible. Other portal: not.
    assert_eq!(
        c.get(&format!("/crm/v3/objects/deals/{id}"), OAUTH)
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&format!("/crm/v3/objects/deals/{id}"), "pat-na1-sim-2")
            .await
            .status,
        404
    );
    let r = c.get("/nope/v9/whatever", PAT).await;
    assert_eq!(r.status, 404);
    let b = r.json();
    assert_eq!(b["status"], "error");
    assert!(b["correlationId"].is_string());
    assert!(b["category"].is_string());
    let r = c
        .call("POST", "/crm/v3/objects/contacts", Some(PAT), None)
        .await;
    assert_eq!(r.status, 201);
    let r = c
        .inner
        .request(
            http::Request::post(format!("{}/crm/v3/objects/contacts", c.base))
                .header("authorization", format!("Bearer {PAT}"))
                .body(full("{not json"))
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(r.status(), 400);
    sim.shutdown().await;
}
