-- placeholder: filled by the issue that owns this family
SELECT 1;
