DROP TABLE import_lines;
