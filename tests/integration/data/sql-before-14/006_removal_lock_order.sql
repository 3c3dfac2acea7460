-- Device and user removal took its row locks in whatever order its DELETEs met the rows, while a claim naming
-- several devices of the user locks one key per device in ascending device order: the two could wait for each
-- other (PostgreSQL then aborts one, and the client got a retryable 503). Removal now locks first, device by device
-- in the claims' order, and within a device in the order uploads and claims take the same rows:
--   device_keys row (an upload that changes the device keys) -> one-time keys, oldest first (claims) -> fallback
--   keys (claims that found no one-time key; uploads).
-- Every writer then waits for another only on the device it is at and never holds rows of a later device, so no
-- cycle can form. The deletion itself is unchanged (mx_delete_device_rows, formerly mx_delete_devices).
ALTER FUNCTION mx_delete_devices(text, text) RENAME TO mx_delete_device_rows;

CREATE FUNCTION mx_delete_devices(p_user text, p_device text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    FOR d IN
        SELECT device_id FROM device_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
        UNION SELECT device_id FROM one_time_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
        UNION SELECT device_id FROM fallback_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
        ORDER BY 1
    LOOP
        PERFORM 1 FROM device_keys WHERE user_id = p_user AND device_id = d FOR UPDATE;
        PERFORM 1 FROM one_time_keys WHERE user_id = p_user AND device_id = d ORDER BY algorithm, seq FOR UPDATE;
        PERFORM 1 FROM fallback_keys WHERE user_id = p_user AND device_id = d ORDER BY algorithm FOR UPDATE;
    END LOOP;
    RETURN mx_delete_device_rows(p_user, p_device);
END $$;
