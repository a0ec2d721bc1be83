"""Operations, apart from the domain: the embedded PostgreSQL and Redis for a machine without them
(`python -m crm.ops.embedded`), and backups (`python -m crm.ops.backup`)."""
