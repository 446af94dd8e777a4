//! Batch read as HubSpot answers it: the input caps (100, 50 with property history) and
//! their message, selected properties, shuffled results, the 207 for missing ids, one call
//! against the budget, and records that agree with the single GET of the same id.

use serde_json::{json, Value};

use crate::support::*;

async fn contacts(c: &Client, n: usize) -> Vec<String> {
    let inputs: Vec<Value> = (0..n)
        .map(|i| json!({ "properties": { "email": format!("b{i}@example.com"), "firstname": format!("F{i}") } }))
        .collect();
    let r = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/create",
            Some(PAT),
            Some(json!({ "inputs": inputs })),
        )
        .await;
    assert_eq!(r.status, 201);
    r.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

fn inputs(ids: &[String]) -> Vec<Value> {
    ids.iter().map(|id| json!({ "id": id })).collect()
}

#[tokio::test]
async fn batch_read_caps_inputs_with_hubspots_message() {
    let (sim, c) = start(config()).await;
    let ids: Vec<String> = (0..101).map(|i| (900_000 + i).to_string()).collect();
    let r = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(PAT),
            Some(json!({ "inputs": inputs(&ids) })),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with("The maximum number of inputs supported in a batch is 100."),
        "{message}"
    );
    let r = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(PAT),
            Some(json!({ "inputs": inputs(&ids[..51]), "propertiesWithHistory": ["email"] })),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("The maximum number of inputs supported in a batch is 50."));
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_read_agrees_with_single_gets_in_shuffled_order() {
    let (sim, c) = start(config()).await;
    let ids = contacts(&c, 40).await;
    let before = c.stats().await.owners[0].arrivals;
    let mut asked = ids.clone();
    asked.push("999999999".into());
    let r = c
        .call(
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(PAT),
            Some(json!({ "inputs": inputs(&asked), "properties": ["email"], "propertiesWithHistory": ["firstname"] })),
        )
        .await;
    assert_eq!(r.status, 207);
    assert_eq!(c.stats().await.owners[0].arrivals, before + 1, "one call");
    let answer = r.json();
    assert_eq!(answer["numErrors"], 1);
    let error = &answer["errors"][0];
    assert_eq!(error["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        error["message"],
        "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
    );
    assert_eq!(error["context"]["ids"], json!(["999999999"]));
    let results = answer["results"].as_array().expect("results");
    let order: Vec<&str> = results.iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(order.len(), 40);
    assert_ne!(
        order,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "shuffled"
    );
    for record in results {
        let id = record["id"].as_str().expect("id");
        let single = c
            .get(
                &format!("/crm/v3/objects/contacts/{id}?properties=email&propertiesWithHistory=firstname"),
                PAT,
            )
            .await;
        assert_eq!(single.status, 200);
        assert_eq!(&single.json(), record);
        assert!(record["properties"].get("firstname").is_none());
        assert!(record["propertiesWithHistory"]["firstname"][0]["value"].is_string());
    }
    let missing = c.get("/crm/v3/objects/contacts/999999999", PAT).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "resource not found");
    sim.shutdown().await;
}
