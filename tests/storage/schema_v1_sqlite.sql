-- The job log as spinenode wrote it at schema version 1 (491a9a3), SQLite dialect: the tests
-- upgrade a database created from this text.

CREATE TABLE spinenode_schema (
	"key" VARCHAR(64) NOT NULL,
	value VARCHAR(255) NOT NULL,
	PRIMARY KEY ("key")
);

CREATE TABLE studies (
	id INTEGER NOT NULL,
	study_uid VARCHAR(64) NOT NULL,
	first_received_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (study_uid)
);

CREATE TABLE workers (
	worker VARCHAR(255) NOT NULL,
	last_seen DATETIME NOT NULL,
	PRIMARY KEY (worker)
);

CREATE TABLE series (
	id INTEGER NOT NULL,
	study_id INTEGER NOT NULL,
	series_uid VARCHAR(64) NOT NULL,
	modality VARCHAR(16) NOT NULL,
	calling_ae VARCHAR(16) NOT NULL,
	first_received_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(study_id) REFERENCES studies (id),
	UNIQUE (series_uid)
);

CREATE INDEX ix_series_study_id ON series (study_id);

CREATE TABLE jobs (
	id INTEGER NOT NULL,
	series_id INTEGER NOT NULL,
	state VARCHAR(16) NOT NULL,
	reason TEXT,
	attempts INTEGER NOT NULL,
	worker VARCHAR(255),
	lease_until DATETIME,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	last_instance_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(series_id) REFERENCES series (id)
);

CREATE INDEX ix_jobs_created_at ON jobs (created_at);

CREATE INDEX ix_jobs_series_id ON jobs (series_id);

CREATE INDEX ix_jobs_state_id ON jobs (state, id);

CREATE TABLE deliveries (
	id INTEGER NOT NULL,
	job_id INTEGER NOT NULL,
	destination VARCHAR(255) NOT NULL,
	sop_instance_uid VARCHAR(64) NOT NULL,
	path TEXT NOT NULL,
	state VARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	last_error TEXT,
	next_attempt_at DATETIME,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_delivery UNIQUE (job_id, destination, sop_instance_uid),
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE INDEX ix_deliveries_job_id ON deliveries (job_id);

CREATE INDEX ix_deliveries_state_next ON deliveries (state, next_attempt_at);

CREATE TABLE instances (
	id INTEGER NOT NULL,
	series_id INTEGER NOT NULL,
	job_id INTEGER,
	sop_instance_uid VARCHAR(64) NOT NULL,
	sop_class_uid VARCHAR(64) NOT NULL,
	calling_ae VARCHAR(16) NOT NULL,
	peer_host VARCHAR(255) NOT NULL,
	received_at DATETIME NOT NULL,
	path TEXT NOT NULL,
	sha256 VARCHAR(64) NOT NULL,
	size BIGINT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(series_id) REFERENCES series (id),
	FOREIGN KEY(job_id) REFERENCES jobs (id),
	UNIQUE (sop_instance_uid)
);

CREATE INDEX ix_instances_job_id ON instances (job_id);

CREATE INDEX ix_instances_series_id ON instances (series_id);

CREATE TABLE job_events (
	id INTEGER NOT NULL,
	job_id INTEGER NOT NULL,
	at DATETIME NOT NULL,
	source VARCHAR(16),
	target VARCHAR(16) NOT NULL,
	reason TEXT,
	worker VARCHAR(255),
	PRIMARY KEY (id),
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE INDEX ix_job_events_job_id ON job_events (job_id);

CREATE TABLE outputs (
	id INTEGER NOT NULL,
	job_id INTEGER NOT NULL,
	sop_instance_uid VARCHAR(64) NOT NULL,
	sop_class_uid VARCHAR(64) NOT NULL,
	path TEXT NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_output UNIQUE (job_id, sop_instance_uid),
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE INDEX ix_outputs_job_id ON outputs (job_id);

CREATE TABLE stage_timings (
	id INTEGER NOT NULL,
	job_id INTEGER NOT NULL,
	stage VARCHAR(64) NOT NULL,
	seconds FLOAT NOT NULL,
	attempt INTEGER NOT NULL,
	at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);

CREATE INDEX ix_stage_timings_job_id ON stage_timings (job_id);

CREATE TABLE instance_events (
	id INTEGER NOT NULL,
	instance_id INTEGER NOT NULL,
	kind VARCHAR(32) NOT NULL,
	at DATETIME NOT NULL,
	calling_ae VARCHAR(16) NOT NULL,
	peer_host VARCHAR(255) NOT NULL,
	sha256 VARCHAR(64) NOT NULL,
	size BIGINT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(instance_id) REFERENCES instances (id)
);

CREATE INDEX ix_instance_events_instance_id ON instance_events (instance_id);
