use super::*;
use crate::event::sample_event;

fn json_template(source: &str) -> Result<BodyTemplate, Vec<TemplateError>> {
    BodyTemplate::custom(source, Escape::Json)
}

#[test]
fn catalog_and_legacy_names_render_json_safely() {
    let body = json_template(
        r#"{"text": "{{ alertSummary }} is {{alertStatus}}", "old": "{{incidentSummary}}", "d": "{{alertDetails}}"}"#,
    )
    .unwrap();
    let event = sample_event();
    let out: serde_json::Value = serde_json::from_slice(&body.render(&event).unwrap()).unwrap();
    let summary = event.summary.as_deref().unwrap();
    assert_eq!(out["text"], format!("{summary} is PENDING"));
    assert_eq!(out["old"], summary);
    assert_eq!(out["d"], event.details.as_deref().unwrap());
}

#[test]
fn whole_event_is_reachable_under_event() {
    let body = json_template(
        r#"{"team": "{{event.labels.team}}", "src": {{{event.alertSource}}}, "links": [{{#event.links}}"{{href}}"{{/event.links}}], "missing": {{{event.nope}}}}"#,
    )
    .unwrap();
    let mut event = sample_event();
    event.extra.insert("labels".into(), serde_json::json!({"team": "db \"core\""}));
    let out: serde_json::Value = serde_json::from_slice(&body.render(&event).unwrap()).unwrap();
    assert_eq!(out["team"], "db \"core\"");
    assert_eq!(out["src"]["name"], "Nagios Network and Hosts");
    assert_eq!(out["links"][0], "https://runbooks.example.com/app-compute");
    assert_eq!(out["missing"], serde_json::Value::Null);
}

#[test]
fn unknown_variable_has_position_and_suggestion() {
    let errors = json_template("{\n  \"text\": \"{{ alertSumary }}\"\n}").unwrap_err();
    assert_eq!(
        errors[0],
        TemplateError::UnknownVariable {
            name: "alertSumary".into(),
            line: 2,
            column: 12,
            suggestion: Some("alertSummary".into())
        }
    );
    assert_eq!(
        errors[0].to_string(),
        "line 2, column 12: unknown variable `alertSumary`, did you mean `alertSummary`?"
    );
}

#[test]
fn every_unknown_variable_is_reported() {
    let errors = json_template(r#"{"a": "{{foo}}", "b": "{{bar}}", "c": "{{alertId}}"}"#).unwrap_err();
    assert_eq!(errors.len(), 2);
}

#[test]
fn syntax_errors_have_positions() {
    let errors = json_template("{\"a\": \"{{#alertId}}\"}").unwrap_err();
    assert!(matches!(errors[0], TemplateError::Syntax { line: 1, column: 8, .. }), "{errors:?}");
}

#[test]
fn catalog_variables_have_no_fields() {
    let errors = json_template(r#"{"a": "{{alertSummary.x}}"}"#).unwrap_err();
    assert!(matches!(errors[0], TemplateError::Misused { .. }), "{errors:?}");
}

#[test]
fn invalid_json_templates_are_caught_at_load() {
    let trailing_comma = json_template(r#"{"a": "{{alertId}}",}"#).unwrap_err();
    assert!(matches!(trailing_comma[0], TemplateError::InvalidJson { sample: "the full sample event", .. }), "{trailing_comma:?}");
    let unquoted = json_template(r#"{"p": {{alertPriority}}}"#).unwrap_err();
    assert!(matches!(unquoted[0], TemplateError::InvalidJson { .. }), "{unquoted:?}");
    assert!(unquoted[0].to_string().contains("HIGH"), "{}", unquoted[0]);
    // A section that only renders when a field is missing is checked with the minimal sample.
    let inverted = json_template(r#"{"a": 1{{^alertId}},{{/alertId}}}"#).unwrap_err();
    assert!(matches!(inverted[0], TemplateError::InvalidJson { sample: "the minimal sample event", .. }), "{inverted:?}");
}

#[test]
fn raw_values_in_json_are_json_values() {
    let body = json_template(r#"{"p": {{{alertPriority}}}, "id": {{{alertSourceId}}}, "u": {{{alertUrl}}}}"#).unwrap();
    let out: serde_json::Value =
        serde_json::from_slice(&body.render(&crate::event::minimal_sample()).unwrap()).unwrap();
    assert_eq!(out, serde_json::json!({"p": null, "id": null, "u": null}));
    let out: serde_json::Value = serde_json::from_slice(&body.render(&sample_event()).unwrap()).unwrap();
    assert_eq!(out["p"], "HIGH");
    assert_eq!(out["id"], 2101194);
}

#[test]
fn standard_payload_is_the_event() {
    let event = sample_event();
    let body = BodyTemplate::Standard.render(&event).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out, event.to_json());
}

#[test]
fn text_and_form_bodies() {
    let text = BodyTemplate::custom("{{alertSummary}}\n", Escape::None).unwrap();
    let event = sample_event();
    assert_eq!(text.render(&event).unwrap(), format!("{}\n", event.summary.clone().unwrap()));
    let form = BodyTemplate::custom("summary={{alertSummary}}&p={{alertPriority}}", Escape::Form).unwrap();
    let rendered = form.render(&event).unwrap();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&rendered).into_owned().collect();
    assert_eq!(pairs[0], ("summary".into(), event.summary.as_deref().unwrap().to_string()));
    assert_eq!(pairs[1], ("p".into(), "HIGH".into()));
}

#[test]
fn templates_whose_json_shape_is_fixed_are_recognised() {
    let fixed = |source: &str| mustache::parse(source).unwrap().json_shape_is_fixed();
    assert!(fixed(r#"{"a": "{{x}}", "b": {{{y}}}, "c": [{{{z}}}, "t {{w}} \"q\" {{v}}"]}"#));
    assert!(fixed(r#"{"a": "x\\{{x}}"}"#), "an escaped backslash does not escape the tag");
    assert!(!fixed(r#"{"a": {{x}}}"#), "escaped text outside a string");
    assert!(!fixed(r#"{"a": "{{{x}}}"}"#), "a JSON value inside a string");
    assert!(!fixed(r#"{"a": "\{{x}}"}"#), "right after a backslash");
    assert!(!fixed(r#"[{{#l}}{{{.}}},{{/l}}]"#), "sections change the shape");
    // Checked at load, then not again: the flag is what `render` goes by.
    let body = json_template(r#"{"a": "{{alertSummary}}", "b": {{{event.x}}}}"#).unwrap();
    assert!(matches!(body, BodyTemplate::Custom { fixed_shape: true, .. }));
    let body = json_template(r#"[{{#event.l}}{{{.}}}{{/event.l}}]"#).unwrap();
    assert!(matches!(body, BodyTemplate::Custom { fixed_shape: false, .. }));
    // Such a template is still checked body by body: two values in a row are not JSON.
    let mut event = sample_event();
    event.extra.insert("l".into(), serde_json::json!(["a", "b"]));
    assert!(body.render(&event).is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, strings with any characters included.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A template recognised as fixed in shape renders valid JSON whatever the event
        /// holds, so skipping the per-body check is safe.
        #[test]
        fn fixed_shape_bodies_are_valid_json(
            summary in any::<String>(),
            source_name in any::<String>(),
            source_id in any_json(),
            custom in any_json(),
            labels in any_json(),
        ) {
            let templates = [
                r#"{"text": "[{{ alertPriority }}] {{ alertSummary }} is {{ alertStatus }}", "source": "{{ alertSourceName }}", "link": {{{ link }}}, "sentAt": {{{ event.sentAt }}}}"#,
                r#"{"id": {{{alertSourceId}}}, "s": "{{alertSourceId}} \\ {{event.labels}}", "l": [{{{event.labels}}}, {{{event.alertSource}}}], "x": {{{ event }}}}"#,
            ];
            let mut event = sample_event();
            event.summary = Some(summary.into());
            let source = event.alert_source.as_mut().unwrap();
            source.name = Some(source_name.into());
            source.id = Some(source_id);
            event.extra.insert("sentAt".into(), custom);
            event.extra.insert("labels".into(), labels);
            for source in templates {
                let body = json_template(source).unwrap();
                prop_assert!(matches!(body, BodyTemplate::Custom { fixed_shape: true, .. }), "{}", source);
                let rendered = body.render_unchecked(&event);
                prop_assert!(
                    serde_json::from_slice::<serde::de::IgnoredAny>(&rendered).is_ok(),
                    "{}", String::from_utf8_lossy(&rendered)
                );
            }
        }
    }

    proptest! {
        /// Whatever a value holds, a JSON template renders valid JSON and the value round-trips.
        #[test]
        fn json_bodies_stay_valid(summary in any::<String>(), details in "\\PC*", team in any::<String>()) {
            let body = json_template(
                r#"{"s": "{{alertSummary}}", "d": "{{{alertDetails}}}x", "raw": {{{alertSummary}}}, "t": "{{event.team}}"}"#,
            );
            // A raw value inside quotes is not JSON; that template must be refused at load.
            prop_assert!(body.is_err());
            let body = json_template(r#"{"s": "{{alertSummary}}", "raw": {{{alertDetails}}}, "t": "{{event.team}}"}"#).unwrap();
            let mut event = sample_event();
            event.summary = Some(summary.as_str().into());
            event.details = Some(details.as_str().into());
            event.extra.insert("team".into(), serde_json::Value::String(team.clone()));
            let rendered = body.render(&event).unwrap();
            let out: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
            prop_assert_eq!(&out["s"], &serde_json::Value::String(summary));
            prop_assert_eq!(&out["raw"], &serde_json::Value::String(details));
            prop_assert_eq!(&out["t"], &serde_json::Value::String(team));
        }
    }
}

#[test]
fn event_paths_read_from_the_typed_event_render_like_its_json_form() {
    let source = r#"{{event.alertSource.name}}|{{event.alertSource.escalationPolicy.id}}|{{event.labels.team}}|{{{event.labels.tags}}}|{{event.labels.none}}|{{{event.labels.none}}}|{{event.summary.x}}|{{#event.alertSource}}{{name}}{{/event.alertSource}}|{{#event.labels}}{{team}}{{/event.labels}}|{{^event.nope}}none{{/event.nope}}|{{event.links.0.href}}|{{{event.alertSource.region}}}"#;
    let template = BodyTemplate::custom(source, Escape::None).unwrap();
    let mut event = sample_event();
    event.extra.insert("labels".into(), serde_json::json!({"team": "db", "tags": [1, "x"], "none": null}));
    let mut source_extra = serde_json::Map::new();
    source_extra.insert("region".into(), serde_json::json!({"name": "eu"}));
    event.alert_source.as_mut().unwrap().extra = source_extra;
    let typed = String::from_utf8(template.render(&event).unwrap().to_vec()).unwrap();
    // The same template over the event's JSON form under `event`, the generic way.
    let parsed = mustache::parse(source).unwrap();
    let mut generic = String::new();
    parsed.render(&serde_json::json!({"event": event.to_json()}), Escape::None, &Partials::default(), &mut generic);
    assert_eq!(typed, generic);
    assert_eq!(typed, r#"Nagios Network and Hosts|42|db|[1,"x"]||||Nagios Network and Hosts|db|none||{"name":"eu"}"#);
}
