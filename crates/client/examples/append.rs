//! Appends one `NominalRegistered` event to a local Accord and checks the receipt against a
//! signed checkpoint and an inclusion proof.
//!
//! ```text
//! TOKEN=$(cargo run -q --bin accord -- token --agency met-police --user pc-1234 --role offender_manager)
//! cargo run -q -p accord-client --example append -- "$TOKEN"
//! ```

use accord_client::{AgencyKey, Client, EventDraft};
use accord_proto::v1 as pb;
use prost::Message;

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = std::env::args().nth(1).ok_or("usage: append <TOKEN> [ENDPOINT]")?;
    let endpoint = std::env::args().nth(2).unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let key = AgencyKey::from_pem_file("deploy/dev/met-police-demo.key", "met-police-demo")?;

    let nominal = uuid::Uuid::now_v7().to_string();
    let event = EventDraft::new(
        &format!("nominal-{nominal}"),
        &pb::NominalRegistered {
            nominal_id: nominal.clone(),
            names: vec!["John Example".into()],
            date_of_birth: "1980-04-01".into(),
            mappa_category: 1,
            lead_agency: "met-police".into(),
            nominal_manager: "pc-1234".into(),
            index_offence: "sexual assault".into(),
            ..Default::default()
        },
    )
    .author("met-police", "pc-1234", "offender_manager")
    .legal_basis("DPA2018-s35", "management of a registered sexual offender")
    .subject("nominal", &nominal)
    .no_stream()
    .sign(&key);

    let mut client = Client::connect(&endpoint, &token).await?;
    let receipt = client.append(vec![event]).await?.remove(0);
    println!(
        "recorded {} at position {} (stream version {})",
        receipt.event_id, receipt.position, receipt.stream_version
    );

    // Check the receipt without trusting the server: the log's key is recorded in the log itself.
    let log_key = client
        .ledger()
        .read_all(pb::ReadAllRequest { from_position: 0, limit: 100 })
        .await?
        .into_inner()
        .events
        .into_iter()
        .find(|e| e.event_type == "accord.v1.LogKeyRegistered")
        .and_then(|e| pb::EventBody::decode(e.event?.body.as_slice()).ok())
        .and_then(|b| pb::LogKeyRegistered::decode(b.payload.as_slice()).ok())
        .ok_or("no log key in the log")?
        .verifier_key;
    let checkpoint = client.ledger().get_checkpoint(pb::GetCheckpointRequest::default()).await?.into_inner();
    let verified = accord_client::verify_checkpoint(&checkpoint, &[log_key])?;
    let proof = client
        .ledger()
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            position: receipt.position,
            tree_size: verified.size,
            ..Default::default()
        })
        .await?
        .into_inner();
    let leaf = accord_domain::merkle::parse_hash("leaf_hash", &receipt.leaf_hash)?;
    accord_client::verify_inclusion(&proof, leaf, &verified)?;
    println!("proven included in the signed checkpoint of size {}:\n{}", verified.size, checkpoint.note);
    Ok(())
}
