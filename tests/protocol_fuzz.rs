//! Property tests of the client-message parser: whatever a browser sends, parsing returns a
//! message or an error naming what is wrong, and never panics.

use heat_actix::session::protocol::{parse_client_message, ClientMessage};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("start"),
            Just("stop"),
            Just("preset"),
            Just("script"),
            Just("lang"),
            Just("tick_ms")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("preset".to_owned()),
                    Just("script".to_owned()),
                    Just("lang".to_owned()),
                    Just("tick_ms".to_owned()),
                    Just("backend".to_owned()),
                    Just("dscript".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse_client_message(&text);
    }

    #[test]
    fn arbitrary_json_never_panics_and_errors_say_something(value in json_value()) {
        match parse_client_message(&value.to_string()) {
            Ok(ClientMessage::Start(start)) => {
                prop_assert!(start.preset.is_some() != start.script.is_some(), "exactly one of preset and script");
                prop_assert!(start.script.is_none() || start.lang.is_some(), "a script comes with its lang");
            }
            Ok(ClientMessage::Stop) => prop_assert_eq!(&value, &serde_json::json!({"type": "stop"})),
            Ok(ClientMessage::Fetch { from, to }) => {
                prop_assert!(from <= to, "a fetch range is ordered");
                prop_assert_eq!(&value["type"], "fetch");
            }
            Ok(ClientMessage::Explain(explain)) => {
                prop_assert!(explain.band.hi.is_none_or(|hi| hi > explain.band.lo), "a band is not empty");
                prop_assert_eq!(&value["type"], "explain");
            }
            Ok(ClientMessage::ExplainStop) => {
                prop_assert_eq!(&value, &serde_json::json!({"type": "explain_stop"}))
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn every_valid_start_parses(preset in "[a-z-]{1,30}", tick in 0u64..100_000) {
        let text = serde_json::json!({"type": "start", "preset": preset, "tick_ms": tick}).to_string();
        match parse_client_message(&text) {
            Ok(ClientMessage::Start(start)) => {
                prop_assert_eq!(start.preset.as_deref(), Some(preset.as_str()));
                prop_assert_eq!(start.tick_ms, Some(tick));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
