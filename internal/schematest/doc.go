// Package schematest checks connlogd's output against the official schema
// files, for the tests of the packages that write events: ECS 8.11.0
// (ecs_flat), OCSF 1.3.0 (the compiled schema the OCSF server uses) and
// the Community ID baseline vectors. The files are read from
// ../shared/schemas beside the repository (Dir), never from the network.
//
// The validators are test oracles, written from the schema files and the
// rules their projects publish, not from connlogd's encoders: a fault in
// an encoder must not be able to hide itself by being copied here.
//
//   - ECS: every field is either in ecs_flat or under a custom namespace
//     the caller names; its JSON type fits the field's type; fields with
//     normalize: array are arrays and the others are not; allowed_values
//     (event.kind, event.category, event.type, event.outcome) and
//     expected_values (network.direction) hold; every event.type is one
//     of the expected_event_types of every event.category; required
//     fields are present; patterns match.
//   - OCSF: the rules of the OCSF server's validator (validator2):
//     the class from class_uid; attributes filtered through the profiles
//     in metadata.profiles; unknown attributes; required attributes;
//     dictionary types with their ranges, lengths, regexes and values;
//     enums and their siblings (a sibling that differs from its enum's
//     caption is a violation here, not only the server's warning);
//     constraints; type_uid = class_uid*100 + activity_id; the version.
//
// Duplicate keys in a JSON object are violations in both: decoders
// disagree on which one wins.
package schematest
