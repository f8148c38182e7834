-- A small invoicing schema for the embedded demo (users, invoices, payments), like the SuoOps invoicing product.
CREATE TABLE IF NOT EXISTS users (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS invoices (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id),
    number      text NOT NULL UNIQUE,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    currency    char(3) NOT NULL DEFAULT 'EUR',
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'void')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS payments (
    id          bigserial PRIMARY KEY,
    invoice_id  bigint NOT NULL REFERENCES invoices(id),
    amount_cents bigint NOT NULL,
    paid_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS invoices_created_at ON invoices (created_at);

INSERT INTO users (email, name)
SELECT 'customer' || g || '@example.com', 'Customer ' || g FROM generate_series(1, 200) g
ON CONFLICT DO NOTHING;

INSERT INTO invoices (user_id, number, amount_cents, status, created_at)
SELECT 1 + (g % 200), 'INV-' || lpad(g::text, 6, '0'), 1000 + (g * 37) % 90000,
       CASE WHEN g % 3 = 0 THEN 'paid' ELSE 'open' END, now() - (g || ' minutes')::interval
FROM generate_series(1, 2000) g
ON CONFLICT DO NOTHING;

INSERT INTO payments (invoice_id, amount_cents, paid_at)
SELECT id, amount_cents, created_at + interval '1 day' FROM invoices
WHERE status = 'paid' AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = invoices.id);
