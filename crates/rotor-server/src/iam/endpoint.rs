//! `POST /identity/token`: an API key exchanged for an access token, as IBM Cloud IAM does.

use super::*;

/// Decodes an `application/x-www-form-urlencoded` body into its name/value pairs, in order.
pub(super) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, IamError> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (pair.get(..at), pair.get(at + 1..)),
                None => (Some(pair), Some(&[][..])),
            };
            let (Some(name), Some(value)) = (name, value) else {
                return Err(IamError::MalformedForm("a pair cannot be split"));
            };
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> Result<String, IamError> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.next().and_then(hex_digit);
                let low = bytes.next().and_then(hex_digit);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(IamError::MalformedForm(
                        "'%' is not followed by two hex digits",
                    ));
                };
                out.push(high << 4 | low);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| IamError::MalformedForm("a value is not UTF-8"))
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

/// The one value of `name` in a form, if any; a name given twice is refused.
fn form_value<'a>(form: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, IamError> {
    let mut values = form.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(IamError::MalformedForm(
            "a parameter appears more than once",
        ));
    }
    Ok(first.map(String::as_str))
}

/// The token endpoint without HTTP: the parameters of a token request, from its query string
/// and its form body (IBM Cloud IAM takes either; IBM's GREP11 JavaScript client sends the
/// query), answered at `now`. A parameter given in both is refused like one given twice.
pub(super) fn token_request(
    iam: &Iam,
    query: &[u8],
    body: &[u8],
    now: u64,
) -> Result<TokenResponse, IamError> {
    let mut form = parse_form(query)?;
    form.extend(parse_form(body)?);
    if form_value(&form, "grant_type")? != Some(GRANT_TYPE_APIKEY) {
        return Err(IamError::BadGrantType);
    }
    match form_value(&form, "apikey")? {
        Some(api_key) if !api_key.is_empty() => iam.issue(api_key, now),
        _ => Err(IamError::MissingApiKey),
    }
}

/// `POST /identity/token`: exchanges an API key (form body or query string
/// `grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=KEY`) for an access token, answering
/// as IBM Cloud IAM does; errors are `{"errorCode", "errorMessage"}` with status 400.
pub async fn token(
    State(iam): State<Arc<Iam>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    match token_request(&iam, query.as_bytes(), &body, unix_now()) {
        Ok(response) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            axum::Json(response),
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// A router with only `POST /identity/token`, to merge into the service's router.
pub fn router(iam: Arc<Iam>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .layer(DefaultBodyLimit::max(MAX_TOKEN_REQUEST))
        .with_state(iam)
}
