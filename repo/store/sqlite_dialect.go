package store

import (
	"database/sql"
	"fmt"
	"strconv"

	"gorm.io/gorm"
	"gorm.io/gorm/callbacks"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/migrator"
	"gorm.io/gorm/schema"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// sqliteDialector is gorm's SQLite dialect over modernc.org/sqlite's own driver.
//
// It replaces github.com/glebarez/sqlite, whose driver (glebarez/go-sqlite, an old
// fork of modernc's) keeps no prepared statement: every Exec and Query parsed its
// SQL again, 6–7% of the process under send load and during a connect storm even
// with gorm's statement cache on. modernc's stmt keeps its sqlite3_stmt, so gorm's
// PrepareStmt cache (and sqliteStmts for the group commit) now skip the parse; its
// argument binding is also linear where the fork searched the arguments once per
// placeholder. The two cannot be linked together: both register "sqlite".
//
// The dialect is glebarez/sqlite's (MIT), cut to what this store uses: the schema is
// plain DDL (schema.go), so the migrator is gorm's generic one and DataTypeOf only
// has to be sensible; no query uses OFFSET, whose LIMIT-less form SQLite lacks.
type sqliteDialector struct{ dsn string }

func (sqliteDialector) Name() string { return "sqlite" }

func (d sqliteDialector) Initialize(db *gorm.DB) error {
	conn, err := sql.Open("sqlite", d.dsn)
	if err != nil {
		return fmt.Errorf("open sqlite: %w", err)
	}
	db.ConnPool = conn
	callbacks.RegisterDefaultCallbacks(db, &callbacks.Config{ // SQLite ≥ 3.35 has RETURNING
		CreateClauses:        []string{"INSERT", "VALUES", "ON CONFLICT", "RETURNING"},
		UpdateClauses:        []string{"UPDATE", "SET", "FROM", "WHERE", "RETURNING"},
		DeleteClauses:        []string{"DELETE", "FROM", "WHERE", "RETURNING"},
		LastInsertIDReversed: true,
	})
	db.ClauseBuilders["LIMIT"] = sqliteLimit
	db.ClauseBuilders["FOR"] = func(c clause.Clause, b clause.Builder) {
		if _, ok := c.Expression.(clause.Locking); ok {
			return // SQLite locks the whole database; there are no row locks to ask for
		}
		c.Build(b)
	}
	return nil
}

// sqliteLimit writes LIMIT and OFFSET as numbers where gorm binds them as
// parameters. SQLite takes a bound LIMIT as a value the query plan may depend on
// (sqlite3ExprIsInteger sets the statement's expmask bit for it), so every new
// binding expires the prepared statement and the next step prepares it again:
// each membership check and member list of a group send was parsed and planned
// anew, 3.8% of the process at 10,000 sends/s with group traffic. Literal numbers
// make one statement per distinct limit in gorm's statement cache instead; they
// are integers, so nothing can be injected.
func sqliteLimit(c clause.Clause, b clause.Builder) {
	l, ok := c.Expression.(clause.Limit)
	if !ok {
		c.Build(b)
		return
	}
	hasLimit := l.Limit != nil && *l.Limit >= 0
	if hasLimit {
		b.WriteString("LIMIT " + strconv.Itoa(*l.Limit))
	}
	if l.Offset > 0 {
		if hasLimit {
			b.WriteByte(' ')
		}
		b.WriteString("OFFSET " + strconv.Itoa(l.Offset))
	}
}

func (d sqliteDialector) Migrator(db *gorm.DB) gorm.Migrator {
	return migrator.Migrator{Config: migrator.Config{DB: db, Dialector: d, CreateIndexAfterCreateTable: true}}
}

func (sqliteDialector) DataTypeOf(field *schema.Field) string {
	switch field.DataType {
	case schema.Bool, schema.Int, schema.Uint:
		return "integer"
	case schema.Float:
		return "real"
	case schema.String:
		return "text"
	case schema.Bytes:
		return "blob"
	case schema.Time:
		return "datetime"
	}
	return string(field.DataType)
}

func (sqliteDialector) DefaultValueOf(field *schema.Field) clause.Expression {
	if field.AutoIncrement {
		return clause.Expr{SQL: "NULL"}
	}
	return clause.Expr{SQL: "DEFAULT"}
}

func (sqliteDialector) BindVarTo(w clause.Writer, _ *gorm.Statement, _ any) { w.WriteByte('?') }

// QuoteTo quotes an identifier, table.column part by part.
func (sqliteDialector) QuoteTo(w clause.Writer, s string) {
	w.WriteByte('`')
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '`':
			w.WriteString("``")
		case '.':
			w.WriteString("`.`")
		default:
			w.WriteByte(s[i])
		}
	}
	w.WriteByte('`')
}

func (sqliteDialector) Explain(sql string, vars ...any) string {
	return logger.ExplainSQL(sql, nil, `"`, vars...)
}

func (sqliteDialector) SavePoint(tx *gorm.DB, name string) error {
	return tx.Exec("SAVEPOINT " + name).Error
}

func (sqliteDialector) RollbackTo(tx *gorm.DB, name string) error {
	return tx.Exec("ROLLBACK TO SAVEPOINT " + name).Error
}
