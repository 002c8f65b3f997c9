"""Entity definitions: meta-schema, field types, table DDL and schema evolution."""
