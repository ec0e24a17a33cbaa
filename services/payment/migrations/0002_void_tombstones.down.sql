DROP TABLE void_tombstones;
