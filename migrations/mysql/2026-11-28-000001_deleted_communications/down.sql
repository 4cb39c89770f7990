DROP TABLE deleted_communications;
