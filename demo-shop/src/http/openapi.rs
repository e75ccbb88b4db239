//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' annotations and
//! the request and response types, and served at `GET /openapi.json`.
//!
//! Every route lists every status it can answer with, and every error answer has the one
//! shape [`ErrorBody`]; CI fuzzes the running service against this document
//! (`scripts/fuzz-api`), which must find no 5xx and no answer outside it.

use std::collections::BTreeMap;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, ToSchema};

use crate::domain::money::{OrderId, Sku};

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "demo-shop",
        description = "Orders, inventory and payments on the CQRS toolkit. Commands are `POST`s \
            answering `202 Accepted` with the log position their events were written at; queries \
            are `GET`s that may wait for that position (`?min_position=`). Every `POST` honours \
            `Idempotency-Key`; every request may carry a W3C `traceparent`."
    ),
    paths(
        super::inventory::register,
        super::inventory::restock,
        super::inventory::list,
        super::inventory::one,
        super::orders::place,
        super::orders::cancel,
        super::orders::ship,
        super::orders::one,
        super::orders::of_customer,
        super::orders::sales,
        super::status::status,
        super::status::checkout,
        super::status::healthz,
        super::status::readyz,
        crate::metrics::scrape,
        document,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "inventory", description = "Products and their stock"),
        (name = "orders", description = "Orders, customers' histories and sales"),
        (name = "operations", description = "Status, health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The body of every error answer: a message for people and a `kind` for programs (`bad_request`,
/// `invalid`, `rejected`, `not_found`, `conflict`, `too_large`, `unsupported_media_type`,
/// `method_not_allowed`, `behind`, `projection_failed`, `unavailable`, `internal`). Some kinds
/// add fields (a `behind` answer names the projection and its checkpoint).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words.
    pub error: String,
    /// What went wrong, as a code.
    pub kind: String,
}

/// What a command about an order answers (`202 Accepted`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    /// The order.
    pub order_id: OrderId,
    /// Where in the log its events were written (`commit/sequence`), to pass as a query's
    /// `min_position`; `null` when the command changed nothing.
    #[schema(value_type = Option<String>, example = "812/40")]
    pub position: Option<cqrs_core::Position>,
}

/// What a command about a product answers (`202 Accepted`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductAccepted {
    /// The product.
    pub sku: Sku,
    /// Where in the log its events were written (`commit/sequence`); `null` when the command
    /// changed nothing.
    #[schema(value_type = Option<String>, example = "812/40")]
    pub position: Option<cqrs_core::Position>,
}

/// An error answer with `status`, its body an [`ErrorBody`]; a 503 says when to try again.
fn error(status: u16, description: &str) -> (String, RefOr<Response>) {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    if status == 503 {
        let seconds = utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .build();
        let retry_after = utoipa::openapi::HeaderBuilder::new()
            .schema(seconds)
            .description(Some("Seconds to wait before trying again"))
            .build();
        response = response.header("Retry-After", retry_after);
    }
    (status.to_string(), RefOr::T(response.build()))
}

/// The answer to a fault of the server's own: the cause is logged, not sent.
fn internal() -> (String, RefOr<Response>) {
    error(
        500,
        "A fault of the server's own (logged with its cause, which the answer leaves out)",
    )
}

/// The error answers of every command (`POST`).
pub struct CommandErrors;

impl IntoResponses for CommandErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            error(400, "Malformed input: a body that is not the JSON asked for, a bad path parameter or Idempotency-Key"),
            error(404, "Nothing under that id"),
            error(409, "Another request with the same Idempotency-Key is still being carried out, or a conflict that outlasted the retries"),
            error(413, "A body over the size limit"),
            error(415, "A body that is not application/json"),
            error(422, "Well-formed input the shop refuses: a value out of range, a rule of the domain, an Idempotency-Key sent again with another body"),
            error(503, "The database cannot be reached; try again (Retry-After)"),
            internal(),
        ])
    }
}

/// The error answers of every query (`GET` of a read model).
pub struct QueryErrors;

impl IntoResponses for QueryErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            error(400, "A bad path parameter or min_position"),
            error(422, "A min_position beyond the head of the log (no command returned it)"),
            error(503, "The read model has not reached min_position in time, or it stopped, or the database cannot be reached; try again (Retry-After)"),
            internal(),
        ])
    }
}

/// The error answers of the operations routes that read the stores.
pub struct StoreErrors;

impl IntoResponses for StoreErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            error(
                503,
                "The database cannot be reached; try again (Retry-After)",
            ),
            internal(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::ApiDoc;
    use crate::domain::{inventory, money::Money, order, text};
    use utoipa::OpenApi;

    fn schema(name: &str) -> Value {
        let document = serde_json::to_value(ApiDoc::openapi()).expect("document");
        document["components"]["schemas"][name]["properties"].clone()
    }

    /// The limits the document states are the domain's: a change to one fails here.
    #[test]
    fn the_documented_limits_are_the_domains() {
        let product = schema("RegisterProduct");
        assert_eq!(product["name"]["maxLength"], text::MAX_NAME);
        assert_eq!(product["price_cents"]["minimum"], Money::MIN_PRICE.0);
        assert_eq!(product["price_cents"]["maximum"], Money::MAX_PRICE.0);
        assert_eq!(
            schema("Restock")["quantity"]["maximum"],
            inventory::MAX_QUANTITY
        );
        assert_eq!(
            schema("LineRequest")["quantity"]["maximum"],
            inventory::MAX_QUANTITY
        );
        let place = schema("PlaceOrder");
        assert_eq!(place["lines"]["maxItems"], order::MAX_LINES);
        assert_eq!(place["card"]["maxLength"], text::MAX_CARD);
        assert_eq!(
            schema("CancelOrder")["reason"]["maxLength"],
            text::MAX_REASON
        );
    }
}

#[cfg(test)]
mod document_tests {
    use std::collections::HashSet;

    use super::ApiDoc;
    use utoipa::OpenApi;

    /// OpenAPI asks for each operation id once.
    #[test]
    fn operation_ids_are_unique() {
        let document = serde_json::to_value(ApiDoc::openapi()).expect("document");
        let mut seen = HashSet::new();
        for (path, operations) in document["paths"].as_object().expect("paths") {
            for (method, operation) in operations.as_object().expect("operations") {
                let id = operation["operationId"].as_str().expect("an operation id");
                assert!(seen.insert(id.to_owned()), "{method} {path}: {id} is taken");
            }
        }
    }
}
