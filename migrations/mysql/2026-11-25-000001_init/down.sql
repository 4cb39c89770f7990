DROP TABLE communications;
DROP TABLE service_tickets;
DROP TABLE transactions;
DROP TABLE customer_tags;
DROP TABLE customers;
