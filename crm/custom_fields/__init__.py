"""Custom fields: fields a company adds to its customers, deals, tickets and activities.

A field's definition is a ``CustomField`` row; its values live in the record's ``custom`` jsonb column
(GIN-indexed), keyed by the field's stable ``key``. ``kinds`` says how each type is validated, stored,
read from a spreadsheet cell and shown; ``services`` defines, renames, archives and retypes fields and
cleans the values the record services store; ``query`` filters, searches and groups by them.
"""
