use super::endpoint::{parse_form, token_request};
use super::token::JwtClaims;
use super::*;

const INSTANCE: &str = "6f1c2d0e-0b7e-4a53-9d1e-2f0c6c1d7a10";
const OTHER_INSTANCE: &str = "0b3e5a2c-1d4f-4e6a-8b7c-9d0e1f2a3b4c";
const NOW: u64 = 1_750_000_000;

fn key(name: &str, role: Role, instances: &[&str]) -> (String, ApiKeyConfig) {
    let (api_key, key_sha256) = new_api_key();
    let config = ApiKeyConfig {
        name: name.to_owned(),
        key_sha256,
        role,
        instances: instances.iter().map(|s| (*s).to_owned()).collect(),
    };
    (api_key, config)
}

/// A service with a Writer key on INSTANCE, a Manager on all instances and a Crypto Unit
/// Administrator on INSTANCE; returns it and the three API keys.
fn setup() -> (Iam, [String; 3]) {
    let (writer, writer_config) = key("writer", Role::Writer, &[INSTANCE]);
    let (manager, manager_config) = key("manager", Role::Manager, &["*"]);
    let (admin, admin_config) = key("admin", Role::CryptoUnitAdministrator, &[INSTANCE]);
    let config = IamConfig {
        token_ttl_seconds: 600,
        api_keys: vec![writer_config, manager_config, admin_config],
    };
    config.check().unwrap();
    (
        Iam::new(Secret32::random(), &config),
        [writer, manager, admin],
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

#[test]
fn issue_then_verify_round_trips() {
    let (iam, [writer, manager, admin]) = setup();
    let response = iam.issue(&writer, NOW).unwrap();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.refresh_token, "not_supported");
    assert_eq!(response.expires_in, 600);
    assert_eq!(response.expiration, NOW + 600);

    let claims = iam
        .verify(Some(&bearer(&response.access_token)), NOW + 1)
        .unwrap();
    assert_eq!(
        claims,
        Claims {
            sub: "writer".to_owned(),
            role: Role::Writer,
            instances: vec![INSTANCE.to_owned()],
            iat: NOW,
            exp: NOW + 600,
            api_key: None,
        }
    );

    let manager_claims = iam
        .verify(
            Some(&bearer(&iam.issue(&manager, NOW).unwrap().access_token)),
            NOW,
        )
        .unwrap();
    assert_eq!(manager_claims.sub, "manager");
    assert_eq!(manager_claims.instances, vec!["*".to_owned()]);
    let admin_claims = iam
        .verify(
            Some(&bearer(&iam.issue(&admin, NOW).unwrap().access_token)),
            NOW,
        )
        .unwrap();
    assert_eq!(admin_claims.role, Role::CryptoUnitAdministrator);
}

#[test]
fn the_scheme_is_case_insensitive_and_other_schemes_carry_no_token() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let header = format!("{scheme} {token}");
        assert!(iam.verify(Some(&header), NOW).is_ok(), "{scheme}");
    }
    assert_eq!(iam.verify(None, NOW), Err(IamError::MissingToken));
    assert_eq!(iam.verify(Some(""), NOW), Err(IamError::MissingToken));
    assert_eq!(iam.verify(Some("Bearer"), NOW), Err(IamError::MissingToken));
    assert_eq!(
        iam.verify(Some("Bearer   "), NOW),
        Err(IamError::MissingToken)
    );
    assert_eq!(
        iam.verify(Some(&format!("Basic {token}")), NOW),
        Err(IamError::MissingToken)
    );
    assert_eq!(iam.verify(Some(&token), NOW), Err(IamError::MissingToken));
    for garbage in [
        "abc",
        "a.b",
        "a.b.c.d",
        "...",
        "!!!.???.***",
        "eyJhbGciOiJIUzI1NiJ9.e30",
    ] {
        assert_eq!(
            iam.verify(Some(&bearer(garbage)), NOW),
            Err(IamError::MalformedToken),
            "{garbage}"
        );
    }
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        iam.verify(Some(&bearer(&huge)), NOW),
        Err(IamError::MalformedToken)
    );
}

/// `token` with its payload swapped for a Manager's on every instance, its signature kept.
fn with_manager_payload(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = serde_json::json!({
        "iss": "rotor", "sub": "writer", "iat": NOW, "exp": NOW + 600,
        "role": "Manager", "instances": ["*"],
    });
    format!(
        "{}.{}.{}",
        parts[0],
        b64(forged_claims.to_string().as_bytes()),
        parts[2]
    )
}

#[test]
fn a_tampered_payload_does_not_verify() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    let forged = with_manager_payload(&token);
    assert_eq!(
        iam.verify(Some(&bearer(&forged)), NOW),
        Err(IamError::BadSignature)
    );
}

#[test]
fn a_verified_token_is_remembered_only_for_itself_and_until_it_expires() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    let first = iam.verify(Some(&bearer(&token)), NOW).unwrap();
    // From the cache: the same claims.
    assert_eq!(iam.verify(Some(&bearer(&token)), NOW + 1).unwrap(), first);
    // Another payload under the remembered signature is not the remembered token.
    let forged = with_manager_payload(&token);
    assert_eq!(
        iam.verify(Some(&bearer(&forged)), NOW),
        Err(IamError::BadSignature)
    );
    // Expired is expired, remembered or not.
    assert!(matches!(
        iam.verify(Some(&bearer(&token)), first.exp),
        Err(IamError::Expired)
    ));
}

#[test]
fn a_tampered_signature_does_not_verify() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let forged = format!("{signing_input}.{}", b64(&bytes));
    assert_eq!(
        iam.verify(Some(&bearer(&forged)), NOW),
        Err(IamError::BadSignature)
    );
    let truncated = format!("{signing_input}.{}", b64(&bytes[..16]));
    assert_eq!(
        iam.verify(Some(&bearer(&truncated)), NOW),
        Err(IamError::BadSignature)
    );
    let unsigned = format!("{signing_input}.");
    assert_eq!(
        iam.verify(Some(&bearer(&unsigned)), NOW),
        Err(IamError::BadSignature)
    );
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    let payload = token.split('.').nth(1).unwrap();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"HS512","typ":"JWT"}"#,
        r#"{"alg":"RS256","typ":"JWT"}"#,
    ] {
        for signature in ["", "AAAA"] {
            let forged = format!("{}.{payload}.{signature}", b64(header.as_bytes()));
            assert_eq!(
                iam.verify(Some(&bearer(&forged)), NOW),
                Err(IamError::UnsupportedAlgorithm),
                "{header}"
            );
        }
    }
    // A header without alg is malformed.
    let forged = format!("{}.{payload}.", b64(br#"{"typ":"JWT"}"#));
    assert_eq!(
        iam.verify(Some(&bearer(&forged)), NOW),
        Err(IamError::MalformedToken)
    );
}

#[test]
fn a_token_signed_under_another_key_does_not_verify() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    let other = Iam {
        secret: Secret32::random(),
        ttl: iam.ttl,
        keys: iam.keys,
        stored: None,
        verified: Default::default(),
    };
    assert_eq!(
        other.verify(Some(&bearer(&token)), NOW),
        Err(IamError::BadSignature)
    );
}

#[test]
fn an_expired_token_is_refused_with_its_own_error() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    assert!(iam.verify(Some(&bearer(&token)), NOW + 599).is_ok());
    let err = iam.verify(Some(&bearer(&token)), NOW + 600).unwrap_err();
    assert_eq!(err, IamError::Expired);
    assert_eq!(
        iam.verify(Some(&bearer(&token)), u64::MAX),
        Err(IamError::Expired)
    );
    let message = err.to_string();
    assert!(message.contains("expired"), "{message}");
    assert!(message.contains("request a new"), "{message}");
    assert_eq!(err.http_status(), 401);
}

#[test]
fn a_validly_signed_token_from_another_issuer_is_malformed() {
    let (iam, _) = setup();
    let payload = serde_json::json!({
        "iss": "someone-else", "sub": "x", "iat": NOW, "exp": NOW + 10,
        "role": "Reader", "instances": ["*"],
    });
    let signing_input = format!("{JWT_HEADER}.{}", b64(payload.to_string().as_bytes()));
    let signature = hmac_sha256(&iam.secret, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64(&signature));
    assert_eq!(
        iam.verify(Some(&bearer(&token)), NOW),
        Err(IamError::MalformedToken)
    );
}

#[test]
fn roles_and_instances_are_checked() {
    let (iam, [writer, manager, admin]) = setup();
    let verify = |key: &str| {
        iam.verify(
            Some(&bearer(&iam.issue(key, NOW).unwrap().access_token)),
            NOW,
        )
        .unwrap()
    };
    let instance = Uuid::parse_str(INSTANCE).unwrap();
    let other = Uuid::parse_str(OTHER_INSTANCE).unwrap();

    let writer = verify(&writer);
    assert_eq!(writer.allows(Some(instance), Role::Reader), Ok(()));
    assert_eq!(writer.allows(Some(instance), Role::Writer), Ok(()));
    let err = writer.allows(Some(instance), Role::Manager).unwrap_err();
    assert_eq!(
        err,
        IamError::WrongRole {
            needed: Role::Manager,
            have: Role::Writer
        }
    );
    assert!(err.to_string().contains("needs the Manager role"), "{err}");
    assert_eq!(err.http_status(), 403);
    let err = writer.allows(Some(other), Role::Reader).unwrap_err();
    assert_eq!(err, IamError::InstanceNotAllowed { instance: other });
    assert_eq!(err.http_status(), 403);
    assert_eq!(writer.allows(None, Role::Writer), Ok(()));
    assert!(matches!(
        writer.allows(None, Role::CryptoUnitAdministrator),
        Err(IamError::WrongRole { .. })
    ));

    let manager = verify(&manager);
    for role in [
        Role::Reader,
        Role::Writer,
        Role::Manager,
        Role::CryptoUnitAdministrator,
    ] {
        assert_eq!(manager.allows(Some(instance), role), Ok(()));
        assert_eq!(manager.allows(Some(other), role), Ok(()));
    }

    let admin = verify(&admin);
    assert_eq!(
        admin.allows(Some(instance), Role::CryptoUnitAdministrator),
        Ok(())
    );
    assert!(matches!(
        admin.allows(Some(instance), Role::Reader),
        Err(IamError::WrongRole {
            needed: Role::Reader,
            have: Role::CryptoUnitAdministrator
        })
    ));
    assert_eq!(
        admin.allows(Some(other), Role::CryptoUnitAdministrator),
        Err(IamError::InstanceNotAllowed { instance: other })
    );
}

#[test]
fn role_ordering() {
    use Role::*;
    let all = [Reader, Writer, Manager, CryptoUnitAdministrator];
    let permitted =
        |have: Role| -> Vec<Role> { all.into_iter().filter(|&n| have.permits(n)).collect() };
    assert_eq!(permitted(Reader), vec![Reader]);
    assert_eq!(permitted(Writer), vec![Reader, Writer]);
    assert_eq!(permitted(Manager), all.to_vec());
    assert_eq!(
        permitted(CryptoUnitAdministrator),
        vec![CryptoUnitAdministrator]
    );
}

#[test]
fn roles_use_ibm_names() {
    for (role, name) in [
        (Role::Reader, "Reader"),
        (Role::Writer, "Writer"),
        (Role::Manager, "Manager"),
        (Role::CryptoUnitAdministrator, "Crypto Unit Administrator"),
    ] {
        assert_eq!(serde_json::to_value(role).unwrap(), name);
        assert_eq!(role.to_string(), name);
        assert_eq!(
            serde_json::from_value::<Role>(serde_json::json!(name)).unwrap(),
            role
        );
    }
    assert!(serde_json::from_value::<Role>(serde_json::json!("CryptoUnitAdministrator")).is_err());
}

#[test]
fn new_api_key_hash_matches() {
    let (api_key, hash) = new_api_key();
    assert!(api_key.starts_with(API_KEY_PREFIX));
    assert_eq!(api_key.len(), API_KEY_PREFIX.len() + 43);
    assert_eq!(hash, hex::encode(sha256(api_key.as_bytes())));
    assert_eq!(hash.len(), 64);
    let (other, other_hash) = new_api_key();
    assert_ne!(api_key, other);
    assert_ne!(hash, other_hash);
}

#[test]
fn unknown_keys_are_refused_without_echoing_them() {
    let (iam, [writer, _, _]) = setup();
    for presented in [
        "rotor_nope".to_owned(),
        String::new(),
        format!("{writer} "),
        writer[..writer.len() - 1].to_owned(),
    ] {
        let err = iam.issue(&presented, NOW).unwrap_err();
        assert_eq!(err, IamError::UnknownApiKey);
        assert_eq!(err.http_status(), 400);
        assert_eq!(err.error_code(), "BXNIM0415E");
        if !presented.is_empty() {
            assert!(!err.to_string().contains(&presented));
        }
    }
    // Uppercase hex in the configuration matches too.
    let (api_key, mut config) = key("upper", Role::Reader, &["*"]);
    config.key_sha256 = config.key_sha256.to_uppercase();
    let iam = Iam::new(
        Secret32::random(),
        &IamConfig {
            api_keys: vec![config],
            ..IamConfig::default()
        },
    );
    assert!(iam.issue(&api_key, NOW).is_ok());
}

#[test]
fn no_error_message_contains_the_token() {
    let (iam, [writer, _, _]) = setup();
    let token = iam.issue(&writer, NOW).unwrap().access_token;
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    for header in [
        bearer(&token),
        format!("{signing_input}.AAAA"),
        format!("Bearer {signing_input}.AAAA"),
    ] {
        if let Err(err) = iam.verify(Some(&header), NOW + 10_000) {
            let message = err.to_string();
            assert!(!message.contains(signing_input), "{message}");
            assert!(!format!("{err:?}").contains(signing_input));
        }
    }
    let response = iam.issue(&writer, NOW).unwrap();
    assert!(!format!("{response:?}").contains(&response.access_token));
}

#[test]
fn the_token_decodes_like_ibm_sdks_decode_it() {
    let (iam, [writer, _, _]) = setup();
    let response = iam.issue(&writer, NOW).unwrap();
    let json = serde_json::to_value(&response).unwrap();
    let object = json.as_object().unwrap();
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "access_token",
            "expiration",
            "expires_in",
            "refresh_token",
            "token_type"
        ]
    );
    assert_eq!(json["token_type"], "Bearer");
    assert!(json["expires_in"].is_u64());
    assert!(json["expiration"].is_u64());

    // As ibm-cloud-sdk-core's JWTTokenManager does: split on '.', base64url-decode the
    // header and the payload, read JSON; exp and iat are integers.
    let parts: Vec<&str> = response.access_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let header = decode(parts[0]);
    assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
    let payload = decode(parts[1]);
    assert_eq!(payload["iss"], "rotor");
    assert_eq!(payload["sub"], "writer");
    assert_eq!(payload["role"], "Writer");
    assert_eq!(payload["instances"], serde_json::json!([INSTANCE]));
    assert_eq!(payload["iat"].as_u64(), Some(NOW));
    assert_eq!(payload["exp"].as_u64(), Some(NOW + 600));
    assert_eq!(payload["exp"].as_u64(), Some(response.expiration));
    assert!(!parts.iter().any(|part| part.contains('=')));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 32);

    // And a role with a space round-trips through the wire claims.
    let claims: JwtClaims = serde_json::from_value(serde_json::json!({
        "iss": "rotor", "sub": "a", "iat": 1, "exp": 2,
        "role": "Crypto Unit Administrator", "instances": [],
    }))
    .unwrap();
    assert_eq!(claims.role, Role::CryptoUnitAdministrator);
}

#[test]
fn secret_file_is_created_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iam.key");
    let first = load_or_create_secret(&path).unwrap();
    let metadata = fs::metadata(&path).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o600);
    assert_eq!(metadata.len(), 32);
    assert_eq!(fs::read(&path).unwrap(), first.expose().to_vec());
    let second = load_or_create_secret(&path).unwrap();
    assert!(first.ct_eq(&second));
    // Nothing but the key is left in the directory.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("iam.key")]);

    // Tokens survive a restart.
    let (api_key, config) = key("k", Role::Reader, &["*"]);
    let config = IamConfig {
        api_keys: vec![config],
        ..IamConfig::default()
    };
    let token = Iam::new(first, &config).issue(&api_key, NOW).unwrap();
    let restarted = Iam::new(load_or_create_secret(&path).unwrap(), &config);
    assert!(
        restarted
            .verify(Some(&bearer(&token.access_token)), NOW)
            .is_ok()
    );
}

#[test]
fn a_secret_file_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.key");
    fs::write(&path, [1u8, 2, 3, 4, 5]).unwrap();
    let err = load_or_create_secret(&path).unwrap_err();
    assert!(matches!(err, IamError::SecretFile { .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("5 bytes"), "{message}");
    assert_eq!(fs::read(&path).unwrap(), vec![1, 2, 3, 4, 5]);

    let missing_dir = dir.path().join("no-such-dir").join("iam.key");
    let err = load_or_create_secret(&missing_dir).unwrap_err();
    assert!(err.to_string().contains(&missing_dir.display().to_string()));
}

#[test]
fn form_parsing() {
    let form = parse_form(b"grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=a+b%2Bc%20d&empty=&flag&&x=%e2%82%ac").unwrap();
    assert_eq!(
        form,
        vec![
            ("grant_type".to_owned(), GRANT_TYPE_APIKEY.to_owned()),
            ("apikey".to_owned(), "a b+c d".to_owned()),
            ("empty".to_owned(), String::new()),
            ("flag".to_owned(), String::new()),
            ("x".to_owned(), "€".to_owned()),
        ]
    );
    assert_eq!(parse_form(b"").unwrap(), vec![]);
    assert_eq!(
        parse_form(b"a=b=c").unwrap(),
        vec![("a".to_owned(), "b=c".to_owned())]
    );
    for bad in [&b"a=%"[..], b"a=%4", b"a=%zz", b"a=%ff", b"a=\xff"] {
        assert!(
            matches!(parse_form(bad), Err(IamError::MalformedForm(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn token_requests() {
    let (iam, [writer, _, _]) = setup();
    let body = format!(
        "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={writer}&response_type=cloud_iam"
    );
    let response = token_request(&iam, b"", body.as_bytes(), NOW).unwrap();
    assert_eq!(
        iam.verify(Some(&bearer(&response.access_token)), NOW)
            .unwrap()
            .sub,
        "writer"
    );
    // The grant type unencoded, as some clients send it.
    let body = format!("apikey={writer}&grant_type={GRANT_TYPE_APIKEY}");
    assert!(token_request(&iam, b"", body.as_bytes(), NOW).is_ok());
    // In the query string, as IBM's GREP11 JavaScript client sends them, or split between the
    // query and the body; a parameter in both is refused like one given twice.
    let query = format!("grant_type={GRANT_TYPE_APIKEY}&apikey={writer}");
    assert!(token_request(&iam, query.as_bytes(), b"", NOW).is_ok());
    let split = format!("apikey={writer}");
    let grant = format!("grant_type={GRANT_TYPE_APIKEY}");
    assert!(token_request(&iam, split.as_bytes(), grant.as_bytes(), NOW).is_ok());
    assert_eq!(
        token_request(&iam, query.as_bytes(), split.as_bytes(), NOW).unwrap_err(),
        IamError::MalformedForm("a parameter appears more than once")
    );

    let cases: [(String, IamError); 7] = [
        (format!("apikey={writer}"), IamError::BadGrantType),
        (
            format!("grant_type=password&apikey={writer}"),
            IamError::BadGrantType,
        ),
        (
            format!("grant_type={GRANT_TYPE_APIKEY}"),
            IamError::MissingApiKey,
        ),
        (
            format!("grant_type={GRANT_TYPE_APIKEY}&apikey="),
            IamError::MissingApiKey,
        ),
        (
            format!("grant_type={GRANT_TYPE_APIKEY}&apikey=rotor_unknown"),
            IamError::UnknownApiKey,
        ),
        (
            format!("grant_type={GRANT_TYPE_APIKEY}&apikey={writer}&apikey=x"),
            IamError::MalformedForm("a parameter appears more than once"),
        ),
        (
            format!("grant_type={GRANT_TYPE_APIKEY}&apikey=%"),
            IamError::MalformedForm("'%' is not followed by two hex digits"),
        ),
    ];
    for (body, expected) in cases {
        let err = token_request(&iam, b"", body.as_bytes(), NOW).unwrap_err();
        assert_eq!(err, expected, "{body}");
        assert_eq!(err.http_status(), 400);
        assert!(err.error_code().starts_with("BXNIM"));
    }
    assert_eq!(IamError::BadGrantType.error_code(), "BXNIM0109E");
}

async fn call(iam: &Arc<Iam>, body: String) -> (StatusCode, serde_json::Value) {
    let response = token(State(Arc::clone(iam)), RawQuery(None), Bytes::from(body)).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_token_handler_answers_like_ibm_iam() {
    let (iam, [writer, _, _]) = setup();
    let iam = Arc::new(iam);
    let before = unix_now();
    let (status, json) = call(
        &iam,
        format!("grant_type={GRANT_TYPE_APIKEY}&apikey={writer}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = json["access_token"].as_str().unwrap();
    let claims = iam.verify(Some(&bearer(token)), unix_now()).unwrap();
    assert!(claims.iat >= before && claims.iat <= unix_now());
    assert_eq!(json["expiration"].as_u64(), Some(claims.exp));

    let (status, json) = call(&iam, "grant_type=x&apikey=y".to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["errorCode"], "BXNIM0109E");
    let (status, json) = call(
        &iam,
        format!("grant_type={GRANT_TYPE_APIKEY}&apikey=rotor_secret_guess"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["errorCode"], "BXNIM0415E");
    assert!(
        !json["errorMessage"]
            .as_str()
            .unwrap()
            .contains("rotor_secret_guess")
    );

    let response = IamError::Expired.into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
}

#[test]
fn config_parses_with_defaults_and_is_checked() {
    let config: IamConfig = toml::from_str(&format!(
        r#"
        [[api_keys]]
        name = "alice"
        key_sha256 = "{}"
        role = "Crypto Unit Administrator"
        instances = ["*"]

        [[api_keys]]
        name = "bob"
        key_sha256 = "{}"
        role = "Reader"
        instances = ["{INSTANCE}"]
        "#,
        "ab".repeat(32),
        "cd".repeat(32)
    ))
    .unwrap();
    assert_eq!(config.token_ttl_seconds, 3600);
    assert_eq!(config.api_keys[0].instances, vec!["*".to_owned()]);
    assert_eq!(config.api_keys[0].role, Role::CryptoUnitAdministrator);
    assert_eq!(config.api_keys[1].instances, vec![INSTANCE.to_owned()]);
    config.check().unwrap();
    assert_eq!(IamConfig::default().token_ttl_seconds, 3600);
    assert_eq!(
        toml::from_str::<IamConfig>("").unwrap(),
        IamConfig::default()
    );

    assert!(toml::from_str::<IamConfig>("ttl = 5").is_err());
    assert!(
        toml::from_str::<IamConfig>(
            "[[api_keys]]\nname = \"a\"\nkey_sha256 = \"00\"\nrole = \"Reader\"\nkey = \"x\""
        )
        .is_err()
    );

    let bad = |edit: &dyn Fn(&mut IamConfig)| {
        let mut config = config.clone();
        edit(&mut config);
        matches!(config.check(), Err(IamError::InvalidConfig(_)))
    };
    assert!(bad(&|c| c.token_ttl_seconds = 0));
    assert!(bad(&|c| c.token_ttl_seconds = MAX_TOKEN_TTL_SECONDS + 1));
    assert!(bad(&|c| c.api_keys[1].name = "alice".to_owned()));
    assert!(bad(&|c| c.api_keys[1].name = " ".to_owned()));
    assert!(bad(&|c| c.api_keys[1].key_sha256 = "ab".repeat(32)));
    assert!(bad(&|c| c.api_keys[1].key_sha256 = "ab".repeat(31)));
    assert!(bad(&|c| c.api_keys[1].key_sha256 = "zz".repeat(32)));
    assert!(bad(&|c| c.api_keys[1].instances = vec!["prod".to_owned()]));
    // An omitted list covers no instance and is refused, rather than covering every one.
    let omitted: IamConfig = toml::from_str(&format!(
        "[[api_keys]]\nname = \"old\"\nkey_sha256 = \"{}\"\nrole = \"Reader\"",
        "ef".repeat(32)
    ))
    .unwrap();
    let Err(IamError::InvalidConfig(why)) = omitted.check() else {
        panic!("a key without instances was accepted");
    };
    assert!(why.contains("names no instances"), "{why}");
}

/// Two replicas (same signing key) on one store, and a stored Writer key on INSTANCE.
fn replicas_with_a_stored_key(
    dir: &Path,
) -> (Iam, Iam, Arc<rotor_store::SqliteStore>, String, Uuid) {
    let store = Arc::new(rotor_store::SqliteStore::open(&dir.join("keys.db")).unwrap());
    let served = [Uuid::parse_str(INSTANCE).unwrap()];
    let replica = || {
        Iam::new(Secret32::from_bytes([7; 32]), &IamConfig::default())
            .with_api_key_store(store.clone(), served)
    };
    let (text, _) = new_api_key();
    let id = Uuid::new_v4();
    rotor_store::ApiKeyStore::create_api_key(
        &*store,
        &rotor_store::ApiKeyRecord {
            id,
            name: "ci".to_owned(),
            key_sha256: sha256(text.as_bytes()),
            role: "Writer".to_owned(),
            instances: vec![INSTANCE.to_owned()],
            generation: 1,
            created: 1,
            created_by: "ops".to_owned(),
            rotated: None,
            revoked: None,
        },
    )
    .unwrap();
    (replica(), replica(), store, text, id)
}

#[test]
fn a_stored_key_gets_tokens_on_every_replica_that_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _store, text, id) = replicas_with_a_stored_key(dir.path());
    let token = a.issue(&text, NOW).unwrap().access_token;
    let claims = b.verify(Some(&bearer(&token)), NOW).unwrap();
    assert_eq!(claims.sub, "ci");
    assert_eq!(claims.role, Role::Writer);
    assert_eq!(claims.api_key, Some(ApiKeyRef { id, generation: 1 }));
    assert!(b.issue(&text, NOW).is_ok());
    // A key made after b read its snapshot: its token is newer than the snapshot, so b reads
    // the store again instead of refusing it.
    let (later, _) = new_api_key();
    let store = b.stored.as_ref().unwrap().store.clone();
    store
        .create_api_key(&rotor_store::ApiKeyRecord {
            id: Uuid::new_v4(),
            name: "later".to_owned(),
            key_sha256: sha256(later.as_bytes()),
            role: "Reader".to_owned(),
            instances: vec!["*".to_owned()],
            generation: 1,
            created: 2,
            created_by: "ops".to_owned(),
            rotated: None,
            revoked: None,
        })
        .unwrap();
    let later_token = a.issue(&later, NOW).unwrap().access_token;
    assert_eq!(
        b.verify(Some(&bearer(&later_token)), NOW).unwrap().sub,
        "later"
    );
    // A service without the store cannot know the key's revocations: it refuses the token.
    let without_store = Iam::new(Secret32::from_bytes([7; 32]), &IamConfig::default());
    assert_eq!(
        without_store.verify(Some(&bearer(&token)), NOW),
        Err(IamError::ApiKeyRevoked)
    );
    assert_eq!(
        without_store.issue(&text, NOW).unwrap_err(),
        IamError::UnknownApiKey
    );
}

#[test]
fn revoking_or_rotating_a_stored_key_ends_its_tokens_and_its_old_text() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, store, text, id) = replicas_with_a_stored_key(dir.path());
    let token = a.issue(&text, NOW).unwrap().access_token;
    assert!(b.verify(Some(&bearer(&token)), NOW).is_ok());

    // Rotated (on another replica, straight in the store): the old text is refused at once,
    // and a replica whose snapshot is newer than the rotation refuses the old token.
    let (new_text, _) = new_api_key();
    rotor_store::ApiKeyStore::rotate_api_key(&*store, id, &sha256(new_text.as_bytes()), 2, "ops")
        .unwrap();
    assert_eq!(a.issue(&text, NOW).unwrap_err(), IamError::UnknownApiKey);
    b.stored.as_ref().unwrap().forget_snapshot();
    assert_eq!(
        b.verify(Some(&bearer(&token)), NOW),
        Err(IamError::ApiKeyRevoked)
    );
    let new_token = a.issue(&new_text, NOW).unwrap().access_token;
    assert_eq!(
        b.verify(Some(&bearer(&new_token)), NOW)
            .unwrap()
            .api_key
            .map(|key| key.generation),
        Some(2)
    );

    // Revoked: the key and its tokens are refused.
    rotor_store::ApiKeyStore::revoke_api_key(&*store, id, 3, "ops").unwrap();
    assert_eq!(
        a.issue(&new_text, NOW).unwrap_err(),
        IamError::UnknownApiKey
    );
    b.stored.as_ref().unwrap().forget_snapshot();
    let refused = b.verify(Some(&bearer(&new_token)), NOW).unwrap_err();
    assert_eq!(refused, IamError::ApiKeyRevoked);
    assert_eq!(refused.http_status(), 401);
}
