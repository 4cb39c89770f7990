DROP TABLE rollup_state;
DROP TABLE customer_months;
DROP TABLE communication_hours;
DROP TABLE communication_slots;
